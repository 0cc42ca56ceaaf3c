"""Use cases: build a request from options, select devices, fit (live / plan / snapshot / server
command line), recommend, report with health and config, fleet. Returns typed results; never prints
and never knows click (cli.py renders and picks the exit code).

- request.py: MODEL resolution, option validation and defaults (the "Assumed:" notes), the estimate
- devices.py: snapshot -> catalog match -> the units the estimator places a model on
- recommend.py, report.py (+ health.py, config.py): the other commands' use cases
"""

from ..estimator.engines import default_engine
from ..units import parse_size
from .request import (
    DEFAULT_CONTEXT_CAP,
    MAX_BATCH,
    ModelChoice,
    ModelWarning,
    build_request,
    candidates_for,
    choice_from_local,
    exit_code,
    fit_on_snapshot,
    local_models,
    merge_server_options,
    parse_gpu_option,
    resolve_checkpoint,
    resolve_model,
    run_estimate,
    server_command,
)

# the app layer's entry points
__all__ = [
    "build_request", "candidates_for", "choice_from_local", "DEFAULT_CONTEXT_CAP", "default_engine",
    "exit_code",    "fit_on_snapshot", "local_models", "MAX_BATCH", "merge_server_options", "ModelChoice", "ModelWarning",
    "parse_gpu_option", "parse_size", "resolve_checkpoint", "resolve_model", "run_estimate", "server_command",
]
