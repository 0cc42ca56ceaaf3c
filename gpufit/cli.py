"""Command line: parse, call, render, pick the exit code. Thin: the work is in app / estimator / probe.

Imports of anything heavy (pynvml, psutil, prometheus_client, gguf) happen inside the commands that
need them, so `gpufit plan` starts fast.
"""

from __future__ import annotations

import os
import sys

import click

from .errors import ExitCode, GpufitError, UsageError

# 128 + signal number, as a shell reports a process a signal ended (POSIX: SIGINT 2, SIGTERM 15)
EXIT_SIGINT, EXIT_SIGTERM = 130, 143


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM, so it unwinds like Ctrl-C: `finally` blocks and the atomic
    writer's cleanup run, `except Exception` handlers do not swallow it."""


def _on_sigterm(signum, frame):
    raise Terminated()




def _keep_revision(ctx, _param, value):
    ctx.meta["gpufit.revision"] = value
    return value


def _revision():
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get("gpufit.revision") if ctx else None


def _estimate_options(f=None, *, schema: str = "gpufit.fit/1"):
    if f is None:  # @_estimate_options(schema=...) for a command with another JSON object
        return lambda g: _estimate_options(g, schema=schema)
    opts = [
        click.option("--quant", "-q", help="Weight format: fp32 bf16 fp16 fp8 int8 int4 awq gptq nf4 mxfp4, GGUF types (q4_k_m, q8_0, iq4_xs ...). Default: the model's native dtype."),
        click.option("--context", "-c", type=int, help="Tokens of context per sequence. Default: min(8192, the model's max)."),
        click.option("--batch", "-b", type=int, default=None, help="Concurrent sequences (default 1)."),
        click.option("--kv-dtype", help="KV-cache dtype: fp16 bf16 fp8 q8_0 q4_0 ... Default: fp16/bf16."),
        click.option("--engine", default="auto", show_default=True, help="vllm | llama.cpp | ollama | transformers | auto (llama.cpp for GGUF types, else vLLM); ENGINE@VERSION for an older release family (vllm@0.18, vllm@0.7, ollama@0.6) or an Ollama release (ollama@0.11.3)."),
        click.option("--reserve", default="0", help="Memory to keep free on each GPU, e.g. 2GiB."),
        click.option("--gpu-memory-utilization", type=float, help="vLLM's up-front claim per GPU (default 0.9)."),
        click.option("--min-headroom", help="Free memory each used GPU must keep, e.g. 2GiB (default max(1 GiB, 5 % of the card)); less is 'tight'."),
        click.option("--json", "as_json", is_flag=True, help=f"Print the {schema} JSON object."),
        click.option("--revision", expose_value=False, callback=_keep_revision, metavar="REV",
                     help="Hugging Face cache: the branch, tag or commit of a cached repo (default refs/main)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _keep_env(ctx, _param, value):
    ctx.meta["gpufit.env"] = tuple(value or ())
    return value


def _env_given() -> dict[str, str]:
    """--env KEY=VALUE as given (app.live.parse_env checks each)."""
    from .app.live import parse_env

    ctx = click.get_current_context(silent=True)
    return parse_env(ctx.meta.get("gpufit.env", ()) if ctx else ())


def _env_option(f):
    return click.option(
        "--env", multiple=True, expose_value=False, callback=_keep_env, metavar="KEY=VALUE",
        help="The server's environment as it will start, repeatable: --env OLLAMA_NUM_PARALLEL=4 "
             "--env OLLAMA_KV_CACHE_TYPE=q8_0 (here/check: over this shell's; plan: the only one).")(f)


def _live_options(f):
    f = click.option("--snapshot", "snapshot_path", type=click.Path(),
                     help="Use a saved gpufit snapshot or an `nvidia-smi -q -x` capture instead of probing.")(f)
    f = click.option("--gpus", help="GPUs to use: indexes or UUIDs, comma separated. Default: CUDA_VISIBLE_DEVICES, else all.")(f)
    f = click.option("--ram", help="Host RAM available for CPU offload, e.g. 64GiB (default: what the probe or snapshot says).")(f)
    return f


def _report_formats() -> list[str]:
    from .render import formats_for

    return list(formats_for("report"))


def _out(kind: str, obj, as_json: bool = False, **kw) -> None:
    """Render a result through the format registry (render/) and print it on stdout."""
    from .render import render

    click.echo(render(kind, obj, "json" if as_json else "text", **kw))


def _emit_fit(res, as_json: bool) -> None:
    _out("fit", res, as_json)


def _snapshot(snapshot_path):
    from .app.live import load_or_probe

    return load_or_probe(snapshot_path)


class _ServerArgs(click.Command):
    """A command that may take a server's command line after `--` (click drops the `--` itself, so
    whether one was given is noted here for _split_server)."""

    def parse_args(self, ctx, args):
        ctx.meta["gpufit_server_dash"] = "--" in args
        ctx.meta["gpufit_before_dash"] = args[:args.index("--")] if "--" in args else list(args)
        return super().parse_args(ctx, args)


def _split_server(model, server):
    """`check -- vllm serve M ...` reaches click as MODEL='vllm' plus the rest: after `--` the first
    word is the server program."""
    if not server and model is None:
        raise UsageError("give MODEL, or the server's command line after --: gpufit check -- vllm serve MODEL")
    ctx = click.get_current_context(silent=True)
    dash = bool(ctx and ctx.meta.get("gpufit_server_dash"))
    if dash and model is not None and model not in (ctx.meta.get("gpufit_before_dash") or []):
        return None, (model,) + tuple(server)
    if model is not None:
        from .estimator import engines

        prog = os.path.basename(model)
        if engines.engine_for_program(prog) or prog.startswith("python"):
            return None, (model,) + tuple(server)
        if server:
            raise UsageError(f"give MODEL ({model}) or a server command line after --, not both")
    return model, tuple(server)


def _live_fit(model, snapshot_path, gpus, quant, context, batch, kv_dtype, engine, reserve, util,
              ram=None, min_headroom=None, alternatives=True, server=()):
    """`here` / `check`: the options as click parsed them -> app.live.fit_live."""
    from .app import live

    model, server = _split_server(model, server)
    opts = live.LiveOptions(model=model, server=server, quant=quant, context=context, batch=batch,
                            kv_dtype=kv_dtype, engine=engine, reserve=reserve, gpu_memory_utilization=util,
                            ram=ram, min_headroom_bytes=min_headroom, gpus=gpus, revision=_revision())
    env = {**os.environ, **_env_given()}
    return live.fit_live(opts, snapshot_path=snapshot_path, env=env, alternatives=alternatives)


class GpufitGroup(click.Group):
    """Every GpufitError becomes one message on stderr and its exit code; any other exception is a
    bug: one line saying so (the traceback with GPUFIT_DEBUG=1) and exit 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as e:  # Ctrl-C (SIGINT) or SIGTERM: the write in flight removed its temp
            # file on the way out (fsutil), so nothing partial is left; exit as a shell reports the signal
            term = isinstance(e, Terminated)
            click.echo(f"gpufit: {'terminated' if term else 'interrupted'}", err=True)
            ctx.exit(EXIT_SIGTERM if term else EXIT_SIGINT)
        except GpufitError as e:
            click.echo(f"gpufit: {e}", err=True)
            ctx.exit(int(e.exit_code))
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort, SystemExit):
            raise
        except BrokenPipeError:
            ctx.exit(0)
        except Exception as e:
            if os.environ.get("GPUFIT_DEBUG"):
                raise
            click.echo(f"gpufit: internal error (a bug, please report it): {type(e).__name__}: {e}\n"
                       "run with GPUFIT_DEBUG=1 for the traceback", err=True)
            ctx.exit(int(ExitCode.INTERNAL))


@click.group(cls=GpufitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gpufit")
def cli():
    """Does this model fit on the GPUs in this box right now, and if not, what would?

    \b
    Exit codes: 0 fits / healthy, 1 internal error, 2 usage error (also: an
    --output / --save path that cannot be written), 3 does not fit,
    4 fits only with CPU offload or below headroom (--strict) / report warnings,
    5 could not probe (no driver, no GPU), 6 a data file that is missing,
    unreadable or invalid, 130 / 143 interrupted (SIGINT / SIGTERM).

    Writes are atomic and replace only regular files: a folder, device, FIFO or
    any symlink (even to a regular file) is refused; give the real path.
    """


@cli.command(cls=_ServerArgs, context_settings={"ignore_unknown_options": True})
@click.argument("model", required=False)
@_estimate_options
@_live_options
@_env_option
@click.argument("server", nargs=-1, type=click.UNPROCESSED)
def here(model, quant, context, batch, kv_dtype, engine, reserve, gpu_memory_utilization, min_headroom,
         as_json, snapshot_path, gpus, ram, server):
    """Probe this box now and say whether MODEL fits in the free GPU memory.

    \b
    Or plan from a server's own command line after --:
      gpufit here -- vllm serve MODEL --max-model-len 32768 --tensor-parallel-size 2
    """
    from . import app
    from .units import parse_size

    mh = parse_size(min_headroom, "--min-headroom") if min_headroom is not None else None
    res = _live_fit(model, snapshot_path, gpus, quant, context, batch, kv_dtype, engine, reserve,
                    gpu_memory_utilization, ram=ram, min_headroom=mh, server=server)
    _emit_fit(res, as_json)
    sys.exit(app.exit_code(res))


@cli.command()
@click.argument("model")
@click.option("--gpu", "gpu_opts", multiple=True, required=True, metavar="KEY[:COUNT]",
              help="Catalog GPU, repeatable: --gpu rtx-4090 --gpu rtx-3060, or --gpu h100-sxm:8.")
@click.option("--ram", help="Host RAM available for CPU offload, e.g. 64GiB (default: unknown).")
@_estimate_options
@_env_option
def plan(model, gpu_opts, ram, quant, context, batch, kv_dtype, engine, reserve, gpu_memory_utilization,
         min_headroom, as_json):
    """Estimate MODEL on catalog hardware (nothing is probed)."""
    from . import app
    from .app.plan import PlanOptions, fit_plan

    opts = PlanOptions(model=model, gpus=tuple(gpu_opts), quant=quant, context=context, batch=batch, kv_dtype=kv_dtype,
                       engine=engine, reserve=reserve, gpu_memory_utilization=gpu_memory_utilization,
                       min_headroom_bytes=app.parse_size(min_headroom, "--min-headroom") if min_headroom is not None
                       else None, ram=ram, revision=_revision(), env=_env_given())
    res = fit_plan(opts)
    _emit_fit(res, as_json)
    sys.exit(app.exit_code(res))


@cli.command(cls=_ServerArgs, context_settings={"ignore_unknown_options": True})
@click.argument("model", required=False)
@_estimate_options
@_live_options
@_env_option
@click.option("--strict", is_flag=True, help="Exit 4 when the fit is tight (below --min-headroom).")
@click.argument("server", nargs=-1, type=click.UNPROCESSED)
def check(model, quant, context, batch, kv_dtype, engine, reserve, gpu_memory_utilization, min_headroom,
          as_json, snapshot_path, gpus, ram, strict, server):
    """Pre-flight: one line on stderr; the exit code says whether MODEL fits now.

    \b
    Or from the server's own command line after --, exactly as it will start:
      gpufit check -- vllm serve meta-llama/Llama-3.1-8B-Instruct --max-model-len 32768
      gpufit check -- python -m vllm.entrypoints.openai.api_server --model M ...
    """
    from . import app
    from .units import parse_size

    mh = parse_size(min_headroom, "--min-headroom") if min_headroom is not None else None
    res = _live_fit(model, snapshot_path, gpus, quant, context, batch, kv_dtype, engine, reserve,
                    gpu_memory_utilization, ram=ram, min_headroom=mh, alternatives=False, server=server)
    from .render import render

    click.echo(render("check", res), err=True)
    if as_json:
        _out("fit", res, True)
    sys.exit(app.exit_code(res, strict))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the gpufit.snapshot/1 JSON object.")
@click.option("--save", "save_path", type=click.Path(), help="Write the snapshot to FILE (atomically; a folder, device, FIFO or symlink is refused, exit 2).")
@click.option("--snapshot", "snapshot_path", type=click.Path(), help="Read a saved snapshot or nvidia-smi -q -x capture.")
def probe(as_json, save_path, snapshot_path):
    """What the probe sees: every GPU and the host."""
    from .catalog import load_catalog

    if save_path is not None:  # refuse a folder / device / symlink before a probe that may take seconds
        from .fsutil import check_writable_target

        check_writable_target(save_path)
    snap = _snapshot(snapshot_path)
    if save_path is not None:
        from .probe import save_snapshot

        save_snapshot(snap, save_path)
        click.echo(f"saved snapshot of {len(snap.gpus)} GPU(s) to {save_path}", err=True)
    if as_json:
        _out("snapshot", snap, True)
    elif not save_path:
        _out("snapshot", snap, catalog=load_catalog())


@cli.command()
@click.option("--format", "fmt", type=click.Choice(_report_formats()), default=None, help="Output format (default: the config's [report] format, else text).")
@click.option("--output", "-o", type=click.Path(), help="Write here (atomically) instead of stdout ('-'). A folder, device, FIFO or symlink is refused (exit 2): give the real path.")
@click.option("--config", "config_path", type=click.Path(), help="Config file (default: /etc/gpufit/gpufit.toml, then $XDG_CONFIG_HOME/gpufit/gpufit.toml).")
@click.option("--snapshot", "snapshot_path", type=click.Path(), help="Report on a saved snapshot or nvidia-smi -q -x capture.")
def report(fmt, output, config_path, snapshot_path):
    """Health report for cron / systemd timers (text, JSON or Prometheus textfile)."""
    from .app.report import run_report

    run = run_report(fmt, output, config_path, snapshot_path)
    if run.stdout is not None:
        click.echo(run.stdout, nl=False)
    for line in run.diagnostics:
        click.echo(line, err=True)
    sys.exit(int(run.exit_code))


@cli.command()
@click.option("--gpu", "gpu_opts", multiple=True, metavar="KEY[:COUNT]", help="Catalog GPUs instead of probing.")
@click.option("--snapshot", "snapshot_path", type=click.Path(), help="A saved snapshot or nvidia-smi capture.")
@click.option("--gpus", help="GPUs of this box to use (indexes or UUIDs).")
@click.option("--context", "-c", type=int, default=8192, show_default=True)
@click.option("--engine", default="auto", show_default=True)
@click.option("--min-tokens-per-s", type=float, default=10.0, show_default=True, help="Slowest decode speed worth recommending.")
@click.option("--min-bits", type=float, default=4.0, show_default=True, help="Lowest bits per weight worth recommending.")
@click.option("--top", type=int, default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def recommend(gpu_opts, snapshot_path, gpus, context, engine, min_tokens_per_s, min_bits, top, as_json):
    """Which catalog models fit now, each at its best quantization, largest first."""
    from . import app
    from .catalog import load_catalog
    from .app.recommend import recommend as run

    catalog = load_catalog()
    if top < 1:
        raise UsageError("--top must be at least 1")
    import math

    for name, value in (("--min-tokens-per-s", min_tokens_per_s), ("--min-bits", min_bits)):
        if not math.isfinite(value) or value < 0:
            raise UsageError(f"{name} must be a finite number >= 0, got {value}")
    if gpu_opts:
        from .estimator.types import devices_from_specs

        devices = devices_from_specs(app.parse_gpu_option(gpu_opts, catalog))
        ram = None
    else:
        from .app.devices import select_devices

        snap = _snapshot(snapshot_path)
        devices = select_devices(snap, catalog, gpus, os.environ if snapshot_path is None else {})
        ram = snap.host.ram_available_bytes
    rows = run(catalog, devices, context=context, engine=engine, min_tokens_per_s=min_tokens_per_s,
               min_bits=min_bits, host_ram=ram, planning=bool(gpu_opts))[:top]
    if as_json:
        _out("recommend", rows, True)
    else:
        _out("recommend", rows, min_tps=min_tokens_per_s)
    sys.exit(ExitCode.OK if rows else ExitCode.NO_FIT)


@cli.command()
@click.argument("model")
@click.option("--prometheus", "url", required=True, metavar="URL", help="Prometheus server, e.g. http://prometheus:9090 (credentials: GPUFIT_PROMETHEUS_TOKEN[_FILE], GPUFIT_PROMETHEUS_USER + _PASSWORD[_FILE]).")
@click.option("--by", metavar="LABEL", help="Label naming a node (default: instance; Hostname for dcgm-exporter).")
@click.option("--match", metavar="SELECTOR", help="Only these series, e.g. '{job=\"gpu\",cluster=\"a\"}'.")
@click.option("--max-age", default="2m", show_default=True, metavar="DURATION", help="Older series are left out and their node marked stale.")
@click.option("--timeout", default="10s", show_default=True, metavar="DURATION", help="Per query.")
@click.option("--top", type=int, help="List only the best N nodes.")
@click.option("--ram", help="Host RAM for CPU offload on every node (default: gpufit's host series, else unknown).")
@click.option("--token-file", type=click.Path(dir_okay=False), help="Bearer token file.")
@click.option("--password-file", type=click.Path(dir_okay=False), help="Basic-auth password file (user from GPUFIT_PROMETHEUS_USER or the URL).")
@click.option("--ca-file", type=click.Path(dir_okay=False), help="CA bundle for https.")
@click.option("--insecure", is_flag=True, help="Do not verify the server's TLS certificate.")
@_estimate_options(schema="gpufit.fleet/1")
def fleet(model, url, by, match, max_age, timeout, top, ram, token_file, password_file, ca_file, insecure,
          quant, context, batch, kv_dtype, engine, reserve, gpu_memory_utilization, min_headroom, as_json):
    """Which nodes of a fleet can take MODEL now, from GPU series in Prometheus (gpufit, dcgm-exporter,
    nvidia_gpu_exporter). Exit 0 a node fits, 3 none does, 5 no fresh GPU series or Prometheus unreachable."""
    from .app import parse_size
    from .app.fleet import parse_duration, run_fleet

    ans = run_fleet(model, url, by=by, match=match, max_age_s=parse_duration(max_age, "--max-age"),
                    timeout_s=parse_duration(timeout, "--timeout"), top=top, quant=quant, context=context,
                    batch=batch, kv_dtype=kv_dtype, engine=engine,
                    reserve_bytes=parse_size(reserve, "--reserve"),
                    gpu_memory_utilization=gpu_memory_utilization,
                    min_headroom_bytes=parse_size(min_headroom, "--min-headroom") if min_headroom else None,
                    ram_bytes=parse_size(ram, "--ram") if ram else None, token_file=token_file,
                    password_file=password_file, ca_file=ca_file, insecure=insecure, revision=_revision())
    for line in ans.said:
        click.echo(f"gpufit fleet: {line}", err=True)
    _out("fleet", ans, as_json)
    if ans.exit_code == ExitCode.NO_PROBE:
        click.echo(f"gpufit fleet: no node has fresh GPU series at {ans.endpoint} (all stale or empty)", err=True)
    sys.exit(int(ans.exit_code))


def _listing(kind: str, items, query, fields, as_json) -> None:
    """`models` / `gpus`: filter the catalog by a substring of `fields`, print JSON or a table; an
    empty result is a usage error (exit 2)."""
    q = (query or "").lower()
    found = [i for i in items if not q or any(q in str(getattr(i, f) or "").lower() for f in fields)]
    if as_json or found:
        _out(kind, found, as_json)
    else:
        click.echo(f"no {kind[:-1] if kind != 'gpus' else 'GPU'} matches {query!r}")
    sys.exit(ExitCode.OK if found else ExitCode.USAGE)


@cli.command()
@click.argument("query", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.option("--local", is_flag=True, help="List the models on this disk (Hugging Face cache, Ollama, LM Studio, llama.cpp) instead of the catalog.")
@click.option("--probe", "probe_now", is_flag=True, help="With --local: probe this box and say whether each fits now.")
@click.option("--snapshot", "snapshot_path", type=click.Path(dir_okay=False),
              help="With --local: say whether each fits on the box a saved snapshot / nvidia-smi capture describes.")
def models(query, as_json, local, probe_now, snapshot_path):
    """List catalog models (QUERY filters by key, name, family or HF repo), or with --local the models on disk."""
    from .catalog import load_catalog

    if local or probe_now or snapshot_path:
        from . import app

        snap = _snapshot(snapshot_path) if (probe_now or snapshot_path) else None
        rows = [r for r in app.local_models(snap) if not query or query.lower() in r["name"].lower()]
        _out("local_models", rows, as_json)
        sys.exit(ExitCode.OK if rows or not query else ExitCode.USAGE)
    _listing("models", load_catalog().models.values(), query, ("key", "name", "family", "hf_repo"), as_json)


@cli.command()
@click.argument("query", required=False)
@click.option("--json", "as_json", is_flag=True)
def gpus(query, as_json):
    """List catalog GPUs (QUERY filters by key, name or architecture)."""
    from .catalog import load_catalog

    _listing("gpus", load_catalog().gpus.values(), query, ("key", "name", "architecture", "vendor_class"), as_json)


def main(argv=None) -> None:
    """Console entry point (`gpufit`). SIGTERM (systemd stopping a unit, `timeout`) unwinds like Ctrl-C:
    exit 143 (130 for SIGINT), no traceback, no partial file."""
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        cli.main(args=argv, prog_name="gpufit")
    except KeyboardInterrupt as e:  # before a command runs (click's own parsing)
        sys.exit(EXIT_SIGTERM if isinstance(e, Terminated) else EXIT_SIGINT)


if __name__ == "__main__":  # pragma: no cover
    main()
