"""What one RL step moves from the devices to the host (issue 26, item 3).

Under ``jax.transfer_guard_device_to_host("disallow")`` every implicit fetch (an
``np.asarray`` of a device array, a ``.item()``) raises, so counting the explicit ones
(``jax.device_get``) counts them all: per step the rollout's tokens, lengths, EOS flags and
log-probs (one fetch: the reward needs the text), the advantages of the rewards (one), and
the update's metrics (one), whether or not the step refreshes mu.
"""

import jax
import numpy as np
import pytest

from llm.data.iterator import BatchIterator
from llm.models.tiny import make_tiny_checkpoint
from llm.rl import init_run, rl_step
from llm.rl.tasks import run_examples
from llm.rl.transfer import tree_to_host
from llm.trainer import TrainConfig


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("transfers")
    cfg = TrainConfig(
        model_path=str(make_tiny_checkpoint(tmp / "llama", "llama")),
        task="arithmetic", task_kwargs={"num_examples": 32}, prompts_per_step=2,
        samples_per_prompt=4, micro_batches=2, max_new_tokens=6, refresh_every=2,
        eval_prompts=0, checkpoint_every=0, out_dir=str(tmp / "out"), progress=False,
        tensorboard=False, mesh="fsdp=1", mesh_subset=True,
    )  # fmt: skip
    setup, state = init_run(cfg)
    batches = BatchIterator(run_examples(cfg, None, None)[0], cfg.prompts_per_step, seed=0)
    for _ in range(2):  # compile a refresh step and a plain one
        state, _ = rl_step(setup, state, next(batches), learning_rate=1e-3)
    return setup, state, batches


def test_a_step_fetches_three_times_and_nothing_implicitly(run, monkeypatch):
    setup, state, batches = run
    fetched = []
    original = jax.device_get

    def counting(tree):
        fetched.append(len(jax.tree.leaves(tree)))
        return original(tree)

    monkeypatch.setattr(jax, "device_get", counting)
    per_step = []
    with jax.transfer_guard_device_to_host("disallow"):
        for _ in range(2):  # step 2 refreshes mu, step 3 does not
            before = len(fetched)
            state, row = rl_step(setup, state, next(batches), learning_rate=1e-3)
            per_step.append(len(fetched) - before)
    assert per_step == [3, 3]
    rollout, advantages, metrics = fetched[-3:]
    assert rollout == 4 and advantages == 1 and metrics > 5  # one fetch of every metric
    assert np.isfinite(row["loss"]) and row["step"] == 3


def test_tree_to_host_fetches_a_tree_once():
    tree = {"a": jax.numpy.arange(3), "b": (jax.numpy.float32(2.5), np.int32(4)), "c": 1.0}
    host = tree_to_host(tree)
    assert isinstance(host["a"], np.ndarray) and host["a"].tolist() == [0, 1, 2]
    assert host["b"][0] == 2.5 and host["b"][1] == 4 and host["c"] == 1.0
