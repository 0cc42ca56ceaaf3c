"""A fake libnvidia-ml.so.1 in C (fakenvml.c), its device tables made from captures (table.py) and the build
and run helpers (build.py). Used through the `fake_nvml_lib` fixture in tests/conftest.py."""
