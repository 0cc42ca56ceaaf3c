"""`gpufit report`: health checks + watched-model verdicts for cron / systemd timers.

`build_report` turns a Snapshot and a Config into a typed `Report` (the `gpufit.report/1` object once
render/json.py has laid it out); `failure_report` is the one written when there is nothing to check (probe
failed, bad config). Renderers (text, json, prometheus) take the Report. `run_report` does it all and returns the exit code: 0 healthy, 4 warnings, 5 critical or
could not probe, 6 bad config / data file.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import health
from .health import Check, Status
from ..errors import ConfigError, DataFileError, ExitCode, GpufitError, ProbeError, WriteError
from ..estimator.types import Verdict
from ..probe.snapshot import GpuState, HostInfo
from ..render import formats_for

if TYPE_CHECKING:
    from .config import Config, ModelWatch
    from ..catalog import Catalog
    from ..probe.snapshot import Snapshot

SCHEMA = "gpufit.report/1"
FORMATS = formats_for("report")
STATUS_EXIT = {Status.OK: ExitCode.OK, Status.WARN: ExitCode.DEGRADED, Status.CRIT: ExitCode.NO_PROBE}


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


@dataclass(frozen=True)
class GpuReport:
    """One GPU of the report: what the probe read, its catalog match, its checks and their worst status."""
    gpu: GpuState
    status: Status
    checks: tuple[Check, ...] = ()
    catalog_key: str | None = None


@dataclass(frozen=True)
class ModelDevice:
    """A GPU a watched model would use, with what it needs there and what would be left."""
    index: str
    uuid: str | None
    needed_bytes: int
    headroom_bytes: int


@dataclass(frozen=True)
class ModelCheck:
    """A `[[model]]` entry of the config fitted on the box now. `error` is why no estimate ran (the
    box has no usable GPU now); then verdict and the byte counts are None."""
    name: str
    quant: str | None
    context: int | None
    batch: int | None
    engine: str | None
    kv_dtype: str | None
    status: Status = Status.WARN
    verdict: Verdict | None = None
    needed_bytes: int | None = None
    headroom_bytes: int | None = None
    devices: tuple[ModelDevice, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class Report:
    """The gpufit.report/1 object (DESIGN.md). `success` False is a run that had nothing to check (the
    probe or the config failed): then `error` says why and `host` is None. `hostname` and `time` are
    None for a capture of another box that did not record them, never this host's."""
    success: bool
    status: Status
    timestamp: float
    time: str | None
    hostname: str | None
    duration_s: float | None = None
    host: HostInfo | None = None
    source: str | None = None
    config_files: tuple[str, ...] = ()
    host_checks: tuple[Check, ...] = ()
    gpus: tuple[GpuReport, ...] = ()
    models: tuple[ModelCheck, ...] = ()
    error: str | None = None
    schema: str = SCHEMA

    @property
    def exit_code(self) -> ExitCode:
        return STATUS_EXIT[self.status]

    def to_dict(self) -> dict[str, Any]:
        from ..render.json import report_object

        return report_object(self)


def check_model(watch: ModelWatch, snapshot: Snapshot, catalog: Catalog | None) -> ModelCheck:
    """Fit one watched model on the snapshot now. Estimator failures become the entry's `error`."""
    from . import request  # lazy: the estimator and catalog load only when a model is watched

    asked = ModelCheck(watch.name, watch.quant, watch.context, watch.batch, watch.engine, watch.kv_dtype)
    try:
        result = request.fit_on_snapshot(
            watch.name, snapshot, quant=watch.quant, context=watch.context, batch=watch.batch,
            kv_dtype=watch.kv_dtype, engine=watch.engine, catalog=catalog,
            env={})  # the report is about the whole box, not this process's CUDA_VISIBLE_DEVICES
    except ProbeError as e:  # the box has no usable GPU now: a finding about the box, not the config
        return replace(asked, error=str(e))
    except GpufitError as e:  # a [[model]] entry no run can satisfy (context past the model's max, a quant
        # its engine cannot run, a broken model file): the config is at fault, exit 6 naming its line
        where = f"line {watch.line}: [[model]] name={watch.name!r}" if watch.line else f"[[model]] name={watch.name!r}"
        raise ConfigError(watch.path, str(e), where) from None
    r = result.request
    used = tuple(ModelDevice(d.index, d.uuid, d.needed_bytes, d.headroom_bytes)
                 for d in result.devices if d.needed_bytes)
    return replace(
        asked, quant=r.quant.key, context=r.context, batch=r.batch, engine=r.engine_label,
        kv_dtype=r.kv_dtype.key, verdict=result.verdict, needed_bytes=result.memory.total_bytes,
        headroom_bytes=min((d.headroom_bytes for d in used), default=None),
        devices=used, status=Status.OK if result.verdict == Verdict.FITS else Status.WARN)


def build_report(snapshot: Snapshot, config: Config, catalog: Catalog | None = None, *, started: float | None = None,
                 now: float | None = None) -> Report:
    """The gpufit.report/1 object for a snapshot. Pure apart from the clock and the model estimates."""
    now = time.time() if now is None else now
    t = config.thresholds
    live = snapshot.source == "nvml"
    gpus = []
    for g in snapshot.gpus:
        checks = tuple(health.gpu_checks(g, t, live=live))
        gpus.append(GpuReport(g, health.worst(c.status for c in checks), checks, _catalog_key(catalog, g)))
    host_checks = tuple(health.host_checks(snapshot, t))
    models = tuple(check_model(m, snapshot, catalog) for m in config.models)
    status = health.worst([*(g.status for g in gpus), *(c.status for c in host_checks),
                           *(m.status for m in models)])
    # a capture describes another box at another time: its own host name and time, or null, never ours
    hostname = snapshot.host.hostname or (socket.gethostname() if live else None)
    return Report(
        success=True, status=status, timestamp=now, time=_iso(now) if live else snapshot.host.taken_at,
        hostname=hostname, duration_s=_duration(started), host=snapshot.host, source=snapshot.source,
        config_files=tuple(config.files), host_checks=host_checks, gpus=tuple(gpus), models=models)


def _duration(started: float | None) -> float | None:
    return None if started is None else round(max(0.0, time.time() - started), 6)


def failure_report(error: str, *, status: Status = Status.CRIT, started: float | None = None,
                   now: float | None = None, live: bool = True) -> Report:
    """What is written when there is nothing to check: success false, the error, a timestamp. `live`
    False: the report was about a snapshot of another box, so neither this host's name nor now is its."""
    now = time.time() if now is None else now
    return Report(success=False, status=status, timestamp=now, time=_iso(now) if live else None,
                  hostname=socket.gethostname() if live else None, duration_s=_duration(started), error=error)


# ---- the command -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportRun:
    """What one `gpufit report` run did: its exit code, the diagnostics for stderr, and the rendered
    report when it goes to standard output (None when it was written to a file)."""
    exit_code: ExitCode
    diagnostics: tuple[str, ...] = ()
    stdout: str | None = None


def _emit(report: Report, fmt: str, output: str | None) -> str | None:
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
    flagged = (Status.WARN, Status.CRIT)
    for g in report.gpus:
        said.extend(f"gpufit report: GPU {g.gpu.index} {c.name} {c.status}: {c.message}"
                    for c in g.checks if c.status in flagged)
    said.extend(f"gpufit report: host {c.name} {c.status}: {c.message}" for c in report.host_checks
                if c.status in flagged)
    return ReportRun(report.exit_code, tuple(said), text)
