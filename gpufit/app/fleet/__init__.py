"""`gpufit fleet`: which nodes of a fleet can take MODEL now, read from Prometheus.

    answer = run_fleet("llama3-70b", "http://prometheus:9090", quant="fp8")
    answer.to_dict()      # gpufit.fleet/1
    answer.exit_code      # 0 a node fits, 3 none does, 5 no fresh GPU series

query.py asks Prometheus; sources.py turns gpufit / dcgm-exporter / nvidia_gpu_exporter series into one
Snapshot per node; rank.py estimates and ranks. docs/fleet.md lists the PromQL.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...errors import ExitCode, UsageError

if TYPE_CHECKING:
    from ...catalog import Catalog, ModelSpec
    from .query import Client
    from .rank import NodeFit, RequestOptions
    from .sources import NodeView

SCHEMA = "gpufit.fleet/1"
DEFAULT_MAX_AGE_S = 120.0  # two scrapes of a typical 1m interval
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S: dict[str | None, float] = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}

__all__ = ["run_fleet", "FleetAnswer", "parse_duration", "SCHEMA"]


def parse_duration(text: object, option: str) -> float:
    """'2m' / '90s' / '500ms' / '1h' / '30' (seconds) -> seconds, > 0."""
    m = _DURATION.match(str(text))
    if not m:
        raise UsageError(f"{option}: cannot read duration {text!r}; write e.g. 30s, 2m or 1h")
    s = float(m.group(1)) * _UNIT_S[m.group(2)]
    if not s > 0 or not math.isfinite(s):
        raise UsageError(f"{option} must be longer than 0, got {text!r}")
    return s


@dataclass(frozen=True)
class FleetAnswer:
    """The ranked nodes and everything needed to render them."""
    model: ModelSpec
    request: dict[str, Any]
    nodes: tuple[NodeFit, ...]  # ranked
    notes: tuple[Any, ...]  # defaults taken (as `here` lists them)
    said: tuple[str, ...] = ()  # series left out, sources disagreeing (stderr)
    queries: tuple[str, ...] = ()
    endpoint: str = ""
    estimates: int = 0

    @property
    def fits(self) -> list[str]:
        from .rank import FITS_NOW

        return [n.view.node for n in self.nodes if n.group == FITS_NOW]

    @property
    def exit_code(self) -> ExitCode:
        from .rank import NO_DATA

        if self.fits:
            return ExitCode.OK
        if all(n.group == NO_DATA for n in self.nodes):
            return ExitCode.NO_PROBE
        return ExitCode.NO_FIT

    def to_dict(self) -> dict[str, Any]:
        m = self.model
        return {
            "schema": SCHEMA,
            "model": {"key": m.key, "name": m.name},
            "request": self.request,
            "nodes": [n.to_dict() for n in self.nodes],
            "fits": self.fits,
        }


def run_fleet(model: str, url: str, *, by: str | None = None, match: str | None = None,
              max_age_s: float = DEFAULT_MAX_AGE_S, timeout_s: float = 10.0, top: int | None = None,
              quant: str | None = None, context: int | None = None, batch: int | None = None,
              kv_dtype: str | None = None,
              engine: str = "auto", reserve_bytes: int = 0, gpu_memory_utilization: float | None = None,
              min_headroom_bytes: int | None = None, ram_bytes: int | None = None,
              token_file: str | None = None, password_file: str | None = None, ca_file: str | None = None,
              insecure: bool = False, revision: str | None = None, env: Mapping[str, str] | None = None,
              catalog: Catalog | None = None, client: Client | None = None) -> FleetAnswer:
    """Ask Prometheus, build a snapshot per node, estimate, rank. Bad options fail before any query."""
    from ... import app
    from ...catalog import load_catalog
    from . import query, sources
    from .rank import Estimator, fit_node, rank

    env = os.environ if env is None else env
    catalog = catalog or load_catalog()
    choice = app.resolve_model(model, catalog, revision, engine=engine)
    # --batch not given is 1, and said so in the engine flags as `here` says it (batch_given)
    options: RequestOptions = dict(
        quant=quant, context=context, batch=1 if batch is None else batch, batch_given=batch is not None,
        kv_dtype=kv_dtype, engine=engine, reserve_bytes=reserve_bytes,
        gpu_memory_utilization=gpu_memory_utilization, min_headroom_bytes=min_headroom_bytes)
    probe_req, notes = app.build_request(choice, (), catalog, **options)  # checks every option once
    by = sources.check_label(by)
    matchers = sources.parse_match(match)
    if top is not None and top < 1:
        raise UsageError("--top must be at least 1")
    if not max_age_s > 0:
        raise UsageError("--max-age must be longer than 0")
    if client is None:
        _, url_user, url_password = query.parse_url(url)
        auth = query.auth_from(env, token_file, password_file, url_user, url_password)
        client = query.Client(url, auth=auth, timeout_s=timeout_s, ca_file=ca_file, insecure=insecure)
    window_s = max(sources.DISCOVERY_WINDOW_S, 5 * max_age_s)

    with _no_cyclic_gc():
        views: list[NodeView] = []
        labels_seen: set[str] = set()
        unnamed: list[str] = []
        for src in sources.SOURCES:
            q = sources.queries(src, matchers, window_s, by)
            series = client.query(q["series"])
            gone = client.query(q["gone"])
            if not series and not gone:
                continue
            for s in (*series, *gone):
                labels_seen.update(s.labels)
            lost = sum(1 for s in series if sources.node_of(s.labels, src, by) is None)
            if lost:
                unnamed.append(f"{lost} {src} series carry no {by or ' / '.join(sources.DEFAULT_BY[src])} "
                               "label to name their node: left out")
            ages = client.query(q["age"]) if series else []
            views.extend(sources.build_views(src, series, ages, gone, by, max_age_s))
        if not labels_seen:
            raise query.PrometheusError(
                f"Prometheus at {client.endpoint} has no GPU memory series"
                + (f" matching {{{matchers}}}" if matchers else "")
                + f" now or in the last {window_s:g}s; queries: " + "; ".join(client.queries)
                + ". Is gpufit's textfile, dcgm-exporter or nvidia_gpu_exporter scraped by this Prometheus?")
        if by and by not in labels_seen:
            raise UsageError(f"--by {by}: no GPU series carries that label; labels they carry: "
                             + ", ".join(sorted(x for x in labels_seen if x != "__name__")))
        views, said = sources.merge_sources(views)
        said = list(getattr(client, "warnings", [])) + unnamed + said
        for v in views:
            said.extend(f"{v.node}: {n}" for n in v.notes)
        est = Estimator(choice, catalog, options, ram_bytes)
        ranked = rank([fit_node(est, v) for v in views])
    if top is not None:
        ranked = ranked[:top]
    request = {
        "prometheus": client.base, "by": by, "match": matchers or None, "max_age_s": max_age_s,
        "quant": probe_req.quant.key, "kv_dtype": probe_req.kv_dtype.key, "context": probe_req.context,
        "batch": probe_req.batch, "engine": probe_req.engine, "reserve_bytes": reserve_bytes,
        "gpu_memory_utilization": gpu_memory_utilization, "min_headroom_bytes": min_headroom_bytes,
        "top": top, "queries": list(client.queries),
    }
    return FleetAnswer(model=choice.spec, request=request, nodes=tuple(ranked), notes=tuple(notes), said=tuple(said),
                       queries=tuple(client.queries), endpoint=client.endpoint, estimates=est.estimates)


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """An answer over 1,000 nodes makes ~100,000 small objects, none in a cycle: the cyclic collector,
    run again and again as they pile up, would cost about a third of the time. Reference counting still
    frees everything; the collector is back on when this is done."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
