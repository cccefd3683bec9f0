"""Test configuration: deterministic, fast, and 8 simulated CPU devices.

XLA_FLAGS must be set before jax is imported anywhere, so it happens here, at the top of
the first module pytest imports. Every test therefore sees 8 CPU devices; single-device
code runs on device 0 as usual.

XLA's LLVM backend runs at -O0 here (``--xla_backend_optimization_level=0``): on the CPU,
compiling is two thirds of the fast lane's time and -O0 cuts the whole lane's CPU time by a
third (549 -> 372 CPU-s, 943 tests, 2 cores). XLA's own HLO passes (fusion, layout,
simplification) run as usual and the programs compute the same thing; float results may
differ from an -O2 build in the last bits, which no test compares: every bit-for-bit check
compares two programs of one process, or two subprocesses of the same flags (the
subprocesses that set XLA_FLAGS themselves add the same -O0 flag, ``O0`` there). Set
XLA_FLAGS to run the tests otherwise (keep --xla_force_host_platform_device_count=8).
"""

import os

os.environ.setdefault(
    "XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# No persistent compilation cache (llm/compile_cache.py) unless a test sets its own: an
# in-process `llm.train` main would otherwise switch the user's ~/.cache/asymre-jax cache on
# for the rest of the worker, so what compiles (count_compiles) and how long the suite takes
# would depend on the test order and on earlier runs. Subprocess tests that share a cache
# set theirs (tests/llm/conftest.py `env`).
os.environ.setdefault("ASYMRE_JAX_COMPILE_CACHE", "off")

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


# A test whose xdist worker died (CI once lost a worker to a native crash inside a test that
# passes on its own and in the full suite here: tests/llm/test_trainer_step.py teacher
# forcing, stop 30; the faulthandler trace puts it inside XLA's CPU compiler, pxla
# `compile`, and one full run here crashed that way twice in the same test, stop 35) runs
# again on a fresh worker, up to CRASH_RERUNS times; one more crash fails it. Only hard
# crashes are retried, never an ordinary failure, and the summary counts the reruns.
CRASH_RERUNS = 2
_CRASHES: dict[str, int] = {}


@pytest.hookimpl(optionalhook=True)
def pytest_handlecrashitem(crashitem, report, sched):
    if _CRASHES.get(crashitem, 0) >= CRASH_RERUNS:
        return
    _CRASHES[crashitem] = _CRASHES.get(crashitem, 0) + 1
    sched.mark_test_pending(crashitem)
    report.outcome = "rerun"


def pytest_report_teststatus(report):
    if report.outcome == "rerun":
        return "rerun", "R", ("RERUN", {"yellow": True})
    return None
