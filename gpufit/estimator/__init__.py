"""Pure arithmetic: memory, placement, speed. No I/O; no pynvml, psutil or click imports."""
