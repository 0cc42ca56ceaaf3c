"""Test-wide settings: the catalog cache goes to a temporary folder, never the user's ~/.cache, and the
model stores gpufit reads (Hugging Face cache, Ollama, LM Studio, llama.cpp) point into an empty
temporary home, so a model the developer has on disk never changes a test's answer."""

import pytest

STORE_ENV = ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "OLLAMA_MODELS", "LLAMA_CACHE", "XDG_CACHE_HOME")


@pytest.fixture(autouse=True, scope="session")
def _private_catalog_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("GPUFIT_CACHE_DIR", str(tmp_path_factory.mktemp("gpufit-cache")))
    mp.setenv("HOME", str(tmp_path_factory.mktemp("home")))
    for k in STORE_ENV:
        mp.delenv(k, raising=False)
    yield
    mp.undo()


@pytest.fixture(scope="session")
def fake_nvml_lib(tmp_path_factory):
    """The fake libnvidia-ml.so.1 (tests/fakenvml_c), compiled once per session with the system C compiler:
    `.current` and `.old` (an R470 driver) folders, `.run(args, table, ...)` starts gpufit against one."""
    from fakenvml_c.build import FakeNvmlLibrary, find_compiler

    if find_compiler() is None:
        pytest.skip("no C compiler (cc, gcc or clang) to build the fake libnvidia-ml.so.1 "
                    "(Debian: apt-get install gcc libc6-dev)")
    return FakeNvmlLibrary.build(tmp_path_factory.mktemp("fakenvml"))
