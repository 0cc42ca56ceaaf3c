"""The output-format registry and the text renderers on pinned results."""

import importlib

import pytest

from gpufit.render import FORMATS, KINDS, formats_for, render
from gpufit.errors import UsageError


def test_every_format_renders_what_the_registry_says():
    for fmt, mod in FORMATS.items():
        assert set(importlib.import_module(mod).RENDERERS) == set(KINDS[fmt]), fmt
    assert formats_for("report") == ("text", "json", "prometheus")
    assert formats_for("fit") == ("text", "json")


def test_unknown_format_or_kind_is_a_usage_error():
    with pytest.raises(UsageError, match="did you mean"):
        render("fit", None, "jsno")
    with pytest.raises(UsageError, match="no prometheus output"):
        render("fit", None, "prometheus")
