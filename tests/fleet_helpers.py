"""Shared by the fleet tests and bench/fleet.py: exporter-named textfiles made from a capture, and a small
Prometheus HTTP API on 127.0.0.1 that answers the three kinds of instant query `gpufit fleet` sends.

The dcgm-exporter and nvidia_gpu_exporter textfiles carry those exporters' real metric and label names
(dcgm-exporter: internal/pkg/rendermetrics/render_metrics.go and etc/default-counters.csv, values in MiB;
nvidia_gpu_exporter: internal/exporter/exporter.go and internal/nvidiasmi/resolve.go, bytes, uuid lower
case without "GPU-"), so a real node_exporter serves them as those exporters would.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "nvidia-smi"
MIB = 1 << 20


def free_by_index(fit: dict) -> list[int]:
    """Free bytes of a gpufit.fit/1 object's devices in device order (0, 1, ..., 0/0, 0/1): fleet's
    free_bytes[] order; the fit object lists the devices a placement uses first."""
    def key(d):
        head, _, tail = d["index"].partition("/")
        return (int(head), int(tail) if tail else -1)
    return [d["free_bytes"] for d in sorted(fit["devices"], key=key)]


def _esc(v) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _line(name: str, labels: dict, value) -> str:
    inner = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
    return f"{name}{{{inner}}} {value}"


def dcgm_text(snapshot, hostname: str, hostname_label: str = "Hostname") -> str:
    """dcgm-exporter's framebuffer series for a snapshot (MiB, as DCGM reports them)."""
    out = []
    for kind, doc in (("FREE", "Framebuffer memory free (in MiB)."), ("USED", "Framebuffer memory used (in MiB)."),
                      ("RESERVED", "Framebuffer memory reserved (in MiB).")):
        name = f"DCGM_FI_DEV_FB_{kind}"
        out += [f"# HELP {name} {doc}", f"# TYPE {name} gauge"]
        for g in snapshot.gpus:
            base = {"gpu": g.index, "UUID": g.uuid, "pci_bus_id": g.pci_bus_id or "", "device": f"nvidia{g.index}",
                    "modelName": g.name, hostname_label: hostname}
            if g.mig.enabled and g.mig.devices:
                for m in g.mig.devices:
                    v = {"FREE": m.memory.free, "USED": (m.memory.total or 0) - (m.memory.free or 0),
                         "RESERVED": 0}[kind]
                    out.append(_line(name, {**base, "GPU_I_PROFILE": m.profile, "GPU_I_ID": m.gpu_instance_id},
                                     v // MIB))
                continue
            v = {"FREE": g.memory.free, "USED": g.memory.used, "RESERVED": g.memory.reserved}[kind]
            if v is not None:
                out.append(_line(name, base, v // MIB))
    return "\n".join(out) + "\n"


def nvidia_smi_text(snapshot) -> str:
    """nvidia_gpu_exporter's identity and memory series for a snapshot (bytes)."""
    info = ["# HELP nvidia_smi_gpu_info A metric with a constant '1' value labeled by gpu uuid, name, ...",
            "# TYPE nvidia_smi_gpu_info gauge"]
    mem = []
    for kind in ("free", "total", "used", "reserved"):
        mem += [f"# HELP nvidia_smi_memory_{kind}_bytes memory.{kind} [MiB]",
                f"# TYPE nvidia_smi_memory_{kind}_bytes gauge"]
        for g in snapshot.gpus:
            v = getattr(g.memory, kind)
            if v is not None:
                mem.append(_line(f"nvidia_smi_memory_{kind}_bytes", {"uuid": _smi_uuid(g.uuid)}, v))
    for g in snapshot.gpus:
        info.append(_line("nvidia_smi_gpu_info", {
            "uuid": _smi_uuid(g.uuid), "name": g.name or "", "driver_model_current": "", "driver_model_pending": "",
            "vbios_version": "", "driver_version": snapshot.host.driver_version or "", "pci_bus_id": g.pci_bus_id or "",
            "serial": g.serial or "", "compute_cap": g.compute_capability or "", "pci_sub_device_id": "",
            "index": g.index, "cuda_version": snapshot.host.cuda_driver_version or ""}, 1))
    mig = []
    for g in snapshot.gpus:
        if not (g.mig.enabled and g.mig.devices):
            continue
        gis = {}
        for m in g.mig.devices:
            mig.append(_line("nvidia_smi_mig_info", {
                "uuid": _smi_uuid(g.uuid), "mig_uuid": m.uuid or "", "gpu_instance_id": m.gpu_instance_id,
                "compute_instance_id": m.compute_instance_id, "profile": m.profile or ""}, 1))
            gis.setdefault(m.gpu_instance_id, m.memory)
        for gi, gi_mem in gis.items():
            for kind in ("total", "free"):
                if getattr(gi_mem, kind) is not None:
                    mig.append(_line(f"nvidia_smi_mig_memory_{kind}_bytes",
                                     {"uuid": _smi_uuid(g.uuid), "gpu_instance_id": gi}, getattr(gi_mem, kind)))
    return "\n".join(info + mem + mig) + "\n"


def _smi_uuid(u: str | None) -> str:
    return (u or "").strip().lower().removeprefix("gpu-")


# ---- a Prometheus HTTP API that answers fleet's queries from series held in memory


class Series:
    def __init__(self, labels: dict, value: float, ts: float | None = None, gone: bool = False):
        self.labels, self.value, self.ts, self.gone = labels, value, ts, gone


def uuid_of(series: list[Series], index: int) -> str:
    """The uuid label gpufit's series give GPU `index` (its gpufit_gpu_info sample)."""
    return next(s.labels["uuid"] for s in series if s.labels["__name__"] == "gpufit_gpu_info"
                and s.labels["index"] == str(index))


def parse_text(text: str, extra: dict) -> list[Series]:
    """Exposition text -> series with `extra` labels (instance, job), as a scrape would store them."""
    from prometheus_client.parser import text_string_to_metric_families

    out = []
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.append(Series({"__name__": s.name, **s.labels, **extra}, s.value))
    return out


_SEL = re.compile(r"(?P<metric>[A-Za-z_:][A-Za-z0-9_:]*)?(?:\{(?P<inner>[^}]*)\})?")
_AGE = re.compile(r"^max by \((?P<by>[^)]*)\) \(time\(\) - timestamp\((?P<sel>.*)\)\)$")
_GONE = re.compile(r"^last_over_time\((?P<sel>.*)\[\d+s\]\) unless (?P<sel2>.*)$")
_MATCH = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
LOOKBACK_S = 300  # Prometheus' default lookback delta


def _matches(labels: dict, inner: str) -> bool:
    for name, op, val in _MATCH.findall(inner or ""):
        have = labels.get(name, "")
        if op == "=" and have != val or op == "!=" and have == val:
            return False
        if op == "=~" and not re.fullmatch(val, have) or op == "!~" and re.fullmatch(val, have):
            return False
    return True


def _select(series, sel: str, now: float, present: bool = True):
    m = _SEL.fullmatch(sel.strip())
    if not m:
        raise ValueError(sel)
    metric, inner = m.group("metric"), m.group("inner") or ""
    for s in series:
        if metric and s.labels["__name__"] != metric or not _matches(s.labels, inner):
            continue
        here = not getattr(s, "gone", False) and (s.ts is None or now - s.ts <= LOOKBACK_S)
        if here == present:
            yield s


def answer(series: list[Series], promql: str, now: float) -> dict:
    """The API's JSON for the three kinds of query fleet sends (sources.queries): a selector,
    `max by (L) (time() - timestamp(sel))`, `last_over_time(sel[w]) unless sel`. A series with `gone`
    set stands for one whose target stopped (Prometheus marked it stale); `ts` for its last sample."""
    q = promql.strip()
    result = []
    try:
        if m := _AGE.match(q):
            by = [x.strip() for x in m.group("by").split(",")]
            groups: dict = {}
            for s in _select(series, m.group("sel"), now):
                key = tuple((k, s.labels[k]) for k in by if k in s.labels)
                groups[key] = max(groups.get(key, 0.0), now - (s.ts if s.ts is not None else now))
            result = [{"metric": dict(k), "value": [now, _fmt(v)]} for k, v in groups.items()]
        elif m := _GONE.match(q):
            for s in _select(series, m.group("sel"), now, present=False):
                labels = {k: v for k, v in s.labels.items() if k != "__name__"}
                result.append({"metric": labels, "value": [now, _fmt(s.value)]})
        else:
            for s in _select(series, q, now):
                result.append({"metric": dict(s.labels), "value": [now, _fmt(s.value)]})
    except ValueError:
        return {"status": "error", "errorType": "bad_data", "error": f"cannot parse {promql!r}"}
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def _fmt(v: float) -> str:
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "+Inf" if v > 0 else "-Inf"
    return repr(int(v)) if float(v).is_integer() else repr(v)


class FakePrometheus:
    """http://127.0.0.1:PORT answering /api/v1/query from `series`, or with `handler(req)` for bad-server
    cases. A context manager: the server thread stops on exit."""

    def __init__(self, series: list[Series] | None = None, handler=None, tls: tuple[str, str] | None = None):
        self.series = series or []
        self.queries: list[str] = []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                import urllib.parse

                u = urllib.parse.urlsplit(self.path)
                q = urllib.parse.parse_qs(u.query).get("query", [""])[0]
                outer.queries.append(q)
                if handler is not None:
                    return handler(self, u, q)
                if u.path != "/api/v1/query":
                    self.send_error(404)
                    return
                body = json.dumps(answer(outer.series, q, time.time())).encode()
                code = 400 if b'"bad_data"' in body else 200
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        # a handler still writing after its client gave up (the --timeout test) would print a traceback
        # into whatever CliRunner is capturing then; keep it here instead
        self.errors: list = []
        self.server.handle_error = lambda request, address: self.errors.append(address)
        scheme = "http"
        if tls is not None:  # (certificate file, key file): serve https
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
