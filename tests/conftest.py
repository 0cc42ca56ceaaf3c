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
