"""Test-wide settings: the catalog cache goes to a temporary folder, never the user's ~/.cache."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_catalog_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("GPUFIT_CACHE_DIR", str(tmp_path_factory.mktemp("gpufit-cache")))
    yield
    mp.undo()
