"""The sampler on devices of its own (``rollout_devices``) in a multi-process run: two local
processes of 2 CPU devices each (jax.distributed, Gloo) with ``--rollout-devices 1`` train as
one process of 4 devices with ``--rollout-devices 2``.

Each process gives its last device to the sampler (`llm.rl.rollout_devices`), so the pair's
learner mesh is fsdp=2 over the first device of each process and its rollout mesh fsdp=2
over the second; the single process has the same two meshes over its devices (0, 1) and
(2, 3). The programs and the global batches are the same; only the process layout differs,
and mu's copy onto the sampler is built by each process from its own learner shards
(`llm.rl.reshard`) instead of ``jax.device_put``. The pair's run is checkpointed and resumed
at a step inside the refresh window, so the resumed step samples from the mu the checkpoint
restored onto the rollout mesh.
"""

import pytest

from llm.models.tiny import make_tiny_checkpoint
from tests.llm.test_multihost import STEPS, assert_same_run, run_one_process, run_two_processes

SPLIT = ("--mesh", "fsdp=2", "--refresh-every", "4")  # mu of step 0 samples steps 0-3


@pytest.mark.slow
def test_two_processes_with_rollout_devices_match_one_process(tmp_path):
    """Two steps, checkpointed, then resumed for a third, which samples from the mu restored
    onto the rollout mesh == three steps of the single process."""
    model = make_tiny_checkpoint(tmp_path / "tiny", "qwen2")
    multi, single = tmp_path / "two_processes", tmp_path / "one_process"
    run_two_processes(model, multi, "--rollout-devices", "1", *SPLIT)
    assert (multi / "checkpoints" / str(STEPS)).is_dir()
    more = ("--num-steps", str(STEPS + 1))
    logs = run_two_processes(model, multi, "--rollout-devices", "1", *SPLIT, *more, "--resume")
    assert all(f"at step {STEPS}" in log and "resumed from" in log for log in logs)
    run_one_process(model, single, 4, "--rollout-devices", "2", *SPLIT, *more)
    assert_same_run(single, multi, STEPS + 1)
