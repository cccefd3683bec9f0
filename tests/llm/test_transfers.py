"""What one RL step moves between the devices and the host (issue 26, item 3).

Under ``jax.transfer_guard_device_to_host("disallow")`` every implicit fetch (an
``np.asarray`` of a device array, a ``.item()``) raises, so counting the explicit ones
(``jax.device_get``) counts them all: per step the rollout's tokens, lengths and EOS flags
(one fetch: the reward needs the text; the behaviour log-probs stay on the device) and the
update's metrics with the advantages the step computed (one), whether or not the step
refreshes mu. The other way, under ``jax.transfer_guard_host_to_device("disallow")``, the
learner's side of a step (`llm.rl.step.dispatch_update`) makes one upload: the prompt
block, the rewards [P, G] and the step's scalars; nothing else goes to the devices.
"""

import jax
import numpy as np
import pytest

from llm.data.iterator import BatchIterator
from llm.models.tiny import make_tiny_checkpoint
from llm.rl import init_run, rl_step
from llm.rl.state import step_key
from llm.rl.step import behaviour_rollout, dispatch_update, refresh
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
    return {"setup": setup, "state": state, "batches": batches}  # tests store the new state


def test_a_step_fetches_twice_and_nothing_implicitly(run, monkeypatch):
    setup, state, batches = run["setup"], run["state"], run["batches"]
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
    run["state"] = state  # the old one's params were donated
    assert per_step == [2, 2]
    rollout, metrics = fetched[-2:]
    assert rollout == 3 and metrics > 5  # one fetch of every metric, advantages included
    assert np.isfinite(row["loss"]) and row["step"] == 3


def _counting_device_put(monkeypatch) -> list:
    calls, original = [], jax.device_put

    def counting(tree, *args, **kwargs):
        calls.append(jax.tree.leaves(tree))
        return original(tree, *args, **kwargs)

    monkeypatch.setattr(jax, "device_put", counting)
    return calls


@pytest.mark.parametrize("device_rollout", [True, False], ids=["engine", "host"])
def test_the_learner_uploads_once_and_nothing_implicitly(run, monkeypatch, device_rollout):
    setup, state, batches = run["setup"], run["state"], run["batches"]
    state = refresh(setup, state)[0]
    ro = behaviour_rollout(
        setup, state.behaviour, next(batches), step_key(state), version=state.step
    )
    if not device_rollout:  # a rollout made on the host: its arrays go up in the same upload
        ro = ro._replace(logprobs_BxN=np.asarray(ro.logprobs_BxN), device=None)
    P, G = ro.rewards_PxG.shape
    calls = _counting_device_put(monkeypatch)
    with (
        jax.transfer_guard_host_to_device("disallow"),
        jax.transfer_guard_device_to_host("disallow"),
    ):
        state, pending = dispatch_update(setup, state, ro, learning_rate=1e-3)
        metrics = pending.fetch()
    run["state"] = state
    assert len(calls) == 1
    shapes = [np.shape(x) for x in calls[0]]
    assert (P, G) in shapes and shapes.count(()) == 4  # rewards; lr, wd, clip norm, delta_v
    if device_rollout:  # the prompt block [M, p, L] twice (tokens, mask), nothing per token
        assert len(shapes) == 2 + 1 + 4 and all(len(s) == 3 for s in shapes[:2])
    assert metrics["advantages"].shape == (P, G) and np.isfinite(metrics["loss"])


def test_tree_to_host_fetches_a_tree_once():
    tree = {"a": jax.numpy.arange(3), "b": (jax.numpy.float32(2.5), np.int32(4)), "c": 1.0}
    host = tree_to_host(tree)
    assert isinstance(host["a"], np.ndarray) and host["a"].tolist() == [0, 1, 2]
    assert host["b"][0] == 2.5 and host["b"][1] == 4 and host["c"] == 1.0
