# Root conftest: the same environment for doctests collected from the packages.
import os

# 8 CPU devices, XLA's LLVM backend at -O0 (compiles faster; why: tests/conftest.py)
os.environ.setdefault(
    "XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
