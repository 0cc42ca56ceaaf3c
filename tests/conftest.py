"""Test-wide settings: the catalog cache goes to a temporary folder, never the user's ~/.cache."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_catalog_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("GPUFIT_CACHE_DIR", str(tmp_path_factory.mktemp("gpufit-cache")))
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
