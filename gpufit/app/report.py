"""`gpufit report`: health checks + watched-model verdicts for cron / systemd timers.

`build_report` turns a Snapshot and a Config into the `gpufit.report/1` object; `failure_report` is the
object written when there is nothing to check (probe failed, bad config). Renderers: text, json,
prometheus. `run_report` does it all and returns the exit code: 0 healthy, 4 warnings, 5 critical or
could not probe, 6 bad config / data file.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import health
from ..errors import ConfigError, DataFileError, ExitCode, GpufitError, ProbeError, WriteError
from ..units import GIB

if TYPE_CHECKING:
    from .config import Config, ModelWatch
    from ..catalog import Catalog
    from ..probe.snapshot import GpuState, Snapshot

SCHEMA = "gpufit.report/1"
from ..render import formats_for

FORMATS = formats_for("report")
STATUS_EXIT = {health.OK: ExitCode.OK, health.WARN: ExitCode.DEGRADED, health.CRIT: ExitCode.NO_PROBE}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _catalog_key(catalog: Catalog | None, g: GpuState) -> str | None:
    if catalog is None:
        return None
    try:
        spec = catalog.match_gpu(g.name, g.pci_device_id, g.memory.total)
    except Exception:  # a catalog lookup must never sink the health report
        return None
    return spec.key if spec else None


def check_model(watch: ModelWatch, snapshot: Snapshot, catalog: Catalog | None) -> dict[str, Any]:
    """Fit one watched model on the snapshot now. Estimator failures become the entry's `error`."""
    entry: dict[str, Any] = {
        "name": watch.name, "quant": watch.quant, "context": watch.context, "batch": watch.batch,
        "engine": watch.engine, "kv_dtype": watch.kv_dtype,
        "status": health.WARN, "verdict": None, "needed_bytes": None, "headroom_bytes": None,
        "devices": [], "message": "", "error": None,
    }
    from . import request  # lazy: the estimator and catalog load only when a model is watched

    try:
        result = request.fit_on_snapshot(
            watch.name, snapshot, quant=watch.quant, context=watch.context, batch=watch.batch,
            kv_dtype=watch.kv_dtype, engine=watch.engine, catalog=catalog,
            env={})  # the report is about the whole box, not this process's CUDA_VISIBLE_DEVICES
    except ProbeError as e:  # the box has no usable GPU now: a finding about the box, not the config
        entry["error"] = entry["message"] = str(e)
        return entry
    except GpufitError as e:  # a [[model]] entry no run can satisfy (context past the model's max, a quant
        # its engine cannot run, a broken model file): the config is at fault, exit 6 naming its line
        where = f"line {watch.line}: [[model]] name={watch.name!r}" if watch.line else f"[[model]] name={watch.name!r}"
        raise ConfigError(watch.path, str(e), where) from None
    d = result.to_dict()
    used = [x for x in d["devices"] if x.get("needed_bytes")]
    headroom = min((x["headroom_bytes"] for x in used), default=None)
    entry.update(
        quant=d.get("quant"), context=d.get("context"), batch=d.get("batch"), engine=d.get("engine"),
        kv_dtype=d.get("kv_dtype"), verdict=d["verdict"], needed_bytes=d["memory"]["total_bytes"],
        headroom_bytes=headroom,
        devices=[{k: x.get(k) for k in ("index", "uuid", "needed_bytes", "headroom_bytes")} for x in used],
    )
    entry["status"] = health.OK if d["verdict"] == "fits" else health.WARN
    gib = "" if headroom is None else f", headroom {headroom / GIB:.1f} GiB"
    entry["message"] = (f"{d['verdict']}: needs {d['memory']['total_bytes'] / GIB:.1f} GiB "
                        f"({d.get('quant')}, context {d.get('context')}, {d.get('engine')}){gib}")
    return entry


def build_report(snapshot: Snapshot, config: Config, catalog: Catalog | None = None, *, started: float | None = None,
                 now: float | None = None) -> dict[str, Any]:
    """The gpufit.report/1 object for a snapshot. Pure apart from the clock and the model estimates."""
    now = time.time() if now is None else now
    t = config.thresholds
    snap = snapshot.to_dict()
    gpus: list[dict[str, Any]] = []
    live = snapshot.source == "nvml"
    for g, d in zip(snapshot.gpus, snap["gpus"]):
        checks = health.gpu_checks(g, t, live=live)
        d["catalog_key"] = _catalog_key(catalog, g)
        d["status"] = health.worst(c.status for c in checks)
        d["checks"] = [c.to_dict() for c in checks]
        gpus.append(d)
    host_checks = [c.to_dict() for c in health.host_checks(snapshot, t)]
    models = [check_model(m, snapshot, catalog) for m in config.models]
    status = health.worst([*(g["status"] for g in gpus), *(c["status"] for c in host_checks),
                           *(m["status"] for m in models)])
    # a capture describes another box at another time: its own host name and time, or null, never ours
    hostname = snapshot.host.hostname or (socket.gethostname() if live else None)
    return {
        "schema": SCHEMA,
        "host": {**snap["host"], "hostname": hostname},
        "time": _iso(now) if live else snapshot.host.taken_at,
        "timestamp": now,
        "duration_s": None if started is None else round(max(0.0, time.time() - started), 6),
        "success": True,
        "status": status,
        "source": snapshot.source,
        "config_files": list(config.files),
        "host_checks": host_checks,
        "gpus": gpus,
        "models": models,
        "error": None,
    }


def failure_report(error: str, *, status: str = health.CRIT, started: float | None = None,
                   now: float | None = None, live: bool = True) -> dict[str, Any]:
    """What is written when there is nothing to check: success false, the error, a timestamp. `live`
    False: the report was about a snapshot of another box, so neither this host's name nor now is its."""
    now = time.time() if now is None else now
    return {
        "schema": SCHEMA,
        "host": {"hostname": socket.gethostname() if live else None},
        "time": _iso(now) if live else None,
        "timestamp": now,
        "duration_s": None if started is None else round(max(0.0, time.time() - started), 6),
        "success": False,
        "status": status,
        "source": None,
        "config_files": [],
        "host_checks": [],
        "gpus": [],
        "models": [],
        "error": error,
    }


# ---- the command -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportRun:
    """What one `gpufit report` run did: its exit code, the diagnostics for stderr, and the rendered
    report when it goes to standard output (None when it was written to a file)."""
    exit_code: ExitCode
    diagnostics: tuple[str, ...] = ()
    stdout: str | None = None


def _emit(report: dict[str, Any], fmt: str, output: str | None) -> str | None:
    """Render `report`; write it atomically to `output`, or return it for standard output."""
    from ..fsutil import write_atomic
    from ..render import render

    text = render("report", report, fmt)
    if output in (None, "-"):
        return text
    write_atomic(output, text)
    return None


def run_report(fmt: str | None = "text", output: str | None = None, config_path: str | None = None,
               snapshot_path: str | None = None) -> ReportRun:
    """Probe (or read `snapshot_path`), check, estimate, render to `output` (None/'-' = stdout).

    Exit: 0 healthy, 4 warnings, 5 critical or could not probe, 6 bad config / snapshot / catalog file,
    2 the output cannot be written (an empty path, a folder, device, FIFO or symlink, or the OS refused).
    Whatever fails, a prometheus output still gets a valid file with gpufit_report_success 0.
    Diagnostics are returned for the caller to print (stderr).
    """
    from .config import check_models, load_config

    said: list[str] = []
    started = time.time()
    if fmt is not None and fmt not in FORMATS:
        return ReportRun(ExitCode.USAGE, (f"gpufit report: unknown format {fmt!r}; one of {', '.join(FORMATS)}",))
    config = None
    try:
        config = load_config(config_path)
        fmt = fmt or config.report.format or "text"
        output = output if output is not None else config.report.output
        catalog = config.catalog()
        check_models(config, catalog)
        from .. import probe

        if snapshot_path is not None:
            snapshot = probe.load_snapshot(snapshot_path)
        else:
            snapshot = probe.take_snapshot(timeout_s=config.report.probe_timeout_s)
        report = build_report(snapshot, config, catalog, started=started)
    except (DataFileError, ProbeError) as e:
        said.append(f"gpufit report: {e}")
        fmt = fmt or (config.report.format if config else None) or "text"
        if fmt not in FORMATS:
            fmt = "text"
        if output is None and config is not None:
            output = config.report.output
        try:
            text = _emit(failure_report(str(e), started=started, live=snapshot_path is None), fmt, output)
        except WriteError as w:  # not even the failure reached monitoring: that is what the unit must see
            return ReportRun(w.exit_code, (*said, f"gpufit report: {w}"))
        return ReportRun(e.exit_code, tuple(said), text)
    except Exception as e:  # a bug: still tell monitoring the run failed, then let the CLI report it (exit 1)
        if fmt == "prometheus" and output not in (None, "-"):
            try:
                _emit(failure_report(f"internal error: {type(e).__name__}: {e}", started=started), fmt, output)
            except Exception:
                pass
        raise
    try:
        text = _emit(report, fmt, output)
    except WriteError as e:  # no report reached monitoring; exit 2 also fails the systemd unit (not 4/5)
        return ReportRun(e.exit_code, (f"gpufit report: {e}",))
    for g in report["gpus"]:
        for c in g["checks"]:
            if c["status"] in (health.WARN, health.CRIT):
                said.append(f"gpufit report: GPU {g['index']} {c['name']} {c['status']}: {c['message']}")
    for c in report["host_checks"]:
        if c["status"] in (health.WARN, health.CRIT):
            said.append(f"gpufit report: host {c['name']} {c['status']}: {c['message']}")
    return ReportRun(STATUS_EXIT[report["status"]], tuple(said), text)
