"""Test configuration: deterministic, fast, and 8 simulated CPU devices.

XLA_FLAGS must be set before jax is imported anywhere, so it happens here, at the top of
the first module pytest imports. Every test therefore sees 8 CPU devices; single-device
code runs on device 0 as usual.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pathlib  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed_numpy():
    np.random.seed(0)  # noqa: NPY002 (legacy global state, for code that uses it)


@pytest.fixture
def shared_data() -> pathlib.Path:
    """Path to ../shared/data; skips the test when it is not beside the checkout."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
