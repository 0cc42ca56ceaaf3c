"""Words for people: each warning / note code (estimator.types.Message) and each alternative, with the
figures formatted here (GiB = 2^30 bytes). The JSON carries the same words beside the code and data."""

from __future__ import annotations

from collections.abc import Callable

from ..units import GIB


def _gib(n) -> str:
    return f"{n / GIB:.1f} GiB"


WORDS: dict[str, Callable[[dict], str]] = {
    "gpu_short": lambda d: f"needs {_gib(d['needed_bytes'])}, {_gib(d['usable_bytes'])} usable on GPU {d['gpu']} ({d['name']})",
    "rank_short": lambda d: f"tensor parallel {d['tensor_parallel']} x pipeline {d['pipeline_parallel']}: a rank is short",
    "gpus_short": lambda d: "short on " + ", ".join(f"GPU {g['gpu']} by {_gib(g['short_bytes'])}" for g in d["short"]),
    "no_layer_fits": lambda d: "not even one layer fits on the GPUs",
    "offload_ram_unknown": lambda d: (
        (f"CPU offload would put {d['cpu_layers']} of {d['layers']} layers ({_gib(d['host_bytes'])}) in host RAM"
         if d["cpu_layers"] else f"the output layer would stay in host RAM ({_gib(d['host_bytes'])} there in all)")
        + ", whose size is not known (--ram)"),
    "offload_ram_short": lambda d: (f"offloaded part needs {_gib(d['host_bytes'])} of host RAM, "
                                    f"{_gib(d['available_bytes'])} available"),
    "layers_do_not_fit": lambda d: f"{d['cpu_layers']} of {d['layers']} layers do not fit on the GPUs",
    "no_gpu": lambda d: "no GPU selected",
    "native_kernels_missing": lambda d: (
        f"{d['quant']} wants compute capability {d['need']}+ for native kernels; on {', '.join(d['have'])} the "
        f"weights run through a slower fallback path (same memory, no {d['quant']} tensor-core speed-up)"),
    "mig_one_at_a_time": lambda d: (
        "MIG devices are used one at a time (a CUDA process sees one MIG device and NCCL does not span them); "
        f"the largest here, {d['gpu']}" + (f" ({d['profile']})" if d.get("profile") else "")
        + f", has {_gib(d['free_bytes'])} free"),
    "engine_cannot_run_quant": lambda d: (f"{d['engine']} does not run {d['quant']} weights; engines that do: "
                                          f"{', '.join(d['engines'])}"),
    "context_over_max": lambda d: f"context {d['context']} exceeds {d['model']}'s maximum of {d['max_context']}",
    "gpu_not_in_catalog": lambda d: f"GPU {d['gpu']} ({d['name']}) is not in the catalog: no speed figure for it",
}
# codes whose words are the message's own text, with a lead-in
LEAD = {"engine_refuses": lambda d: f"{d['engine']} would refuse: "}


def _in_use(d: list) -> str:
    """What holds a node's GPUs: per GPU for up to two, else a total."""
    if not d:
        return "little"
    if len(d) <= 2:
        return ", ".join(f"GPU {u['gpu']} {_gib(u['bytes'])}" for u in d)
    return f"{_gib(sum(u['bytes'] for u in d))} on {len(d)} GPUs"


WORDS.update({
    # an engine's note with figures (engines/ollama.py notes)
    "ollama_output_on_host": lambda d: (
        f"Ollama {d['release']}'s estimate leaves the output layer ({_gib(d['output_bytes'])}) in host RAM: "
        f"layers.offload={d['offload']} of {d['layers']}, which `ollama ps` shows as partly CPU"),
    # why a node of `gpufit fleet` does not simply take the model now (app.fleet.rank.fit_node)
    "node_no_fit": lambda d: word(d["warning"]) if d.get("warning") is not None else "does not fit",
    "node_offload": lambda d: (f"only with CPU offload: {d['gpu_layers']} of {d['layers']} layers on the GPUs, "
                               f"{_gib(d['cpu_bytes'])} in host RAM"),
    "node_tight": lambda d: "fits, with less than the minimum headroom on a card it uses",
    "node_fits_if_empty": lambda d: (f"would fit if its GPUs were empty ({_in_use(d['in_use'])} in use now); now: "
                                     + (word(d["now"]) if d.get("now") is not None else d["verdict"])),
    "node_cannot": lambda d: "not even with its GPUs empty: " + (word(d["empty"]) if d.get("empty") is not None
                                                                 else d["verdict"]),
})


def word(m) -> str:
    """The words for a Message (or a plain string, said as is)."""
    if isinstance(m, str):
        return m
    if m.code in WORDS and not m.text:
        return WORDS[m.code](m.data)
    return LEAD.get(m.code, lambda d: "")(m.data) + m.text


def alternative(a) -> str:
    """One line for an alternative: what to change and what it needs."""
    d = a.data or {}
    if d.get("not_even_4bit"):
        return f"not even 4-bit fits: {a.summary} still needs {_gib(a.total_bytes)}"
    if a.kind == "quant":
        return f"{a.summary}: needs {_gib(a.total_bytes)}, {a.verdict}"
    if a.kind == "offload":
        ram = {"enough": "", "short": " (more than the host has)", "unknown": " (give --ram to check)"}[d["host_ram"]]
        return f"{a.summary}, {_gib(d['host_bytes'])} in host RAM{ram}"
    return a.summary


def model_check(m) -> str:
    """A watched model's line of the report (app.report.ModelCheck): why no estimate ran, or the verdict,
    what it needs and the smallest headroom left on the GPUs it would use."""
    if m.error is not None:
        return m.error
    if m.verdict is None or m.needed_bytes is None:
        return ""
    room = "" if m.headroom_bytes is None else f", headroom {m.headroom_bytes / GIB:.1f} GiB"
    return f"{m.verdict}: needs {m.needed_bytes / GIB:.1f} GiB ({m.quant}, context {m.context}, {m.engine}){room}"


def _memory_held(d: dict) -> str:
    held = f"{_gib(d['used_bytes'])} of {_gib(d['total_bytes'])} in use ({d['ratio']:.0%})"
    procs = d["processes"]
    if not procs:
        return f"{held}; no processes listed"
    who = ", ".join(f"{p['name'] or '?'}[{p['pid']}]" + ("" if p["used_bytes"] is None else f" {_gib(p['used_bytes'])}")
                    for p in procs[:5])
    more = f" and {len(procs) - 5} more" if len(procs) > 5 else ""
    return f"{held}; held by {who}{more}"


# the health checks whose words carry sizes (app.health.Check.data), by check name
CHECK_WORDS: dict[str, Callable[[dict], str]] = {
    "memory_held": _memory_held,
    "host_ram": lambda d: (f"{_gib(d['available_bytes'])} of {_gib(d['total_bytes'])} host RAM available "
                           f"({d['ratio']:.0%}; warn below {d['warn_ratio']:.0%})"),
}


def check_words(c) -> str:
    """A health check's message: its own text, or its figures worded here."""
    if c.data and c.name in CHECK_WORDS:
        return CHECK_WORDS[c.name](dict(c.data))
    return c.text
