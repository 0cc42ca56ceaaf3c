"""gpufit: does this model fit on the GPUs in this box right now?"""

__version__ = "0.1.0"
