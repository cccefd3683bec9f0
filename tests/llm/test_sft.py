"""llm.sft: the jitted step sets the injected hyperparameters and the warm start stops on target."""

import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import llm.sft
from llm.experiments.presets import SMOKE
from llm.models.tiny import tiny_config
from llm.models.transformer import Transformer
from llm.rl.optimizer import hyperparams, make_optimizer
from llm.sft import SFTConfig, run_sft, sft_step

SMALL = dict(SMOKE.sft["model"])  # the smoke preset's warm-start model (a copy)


def _max_change(before, after) -> float:
    # numpy: jnp would compile a subtract, abs and max for every leaf shape
    change = lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b))))  # noqa: E731
    return max(jax.tree.leaves(jax.tree.map(change, before, after)))


def test_sft_step_uses_the_given_learning_rate():
    """The optimizer's hyperparameters come from ``hyper`` (learning rate 0: no change at all;
    the injected initial value is 0, so a step that ignored ``hyper`` would not move)."""
    config = tiny_config("llama", "tiny", **SMALL)
    graphdef, params = nnx.split(Transformer(config, rngs=nnx.Rngs(0)))
    tokens = np.random.default_rng(0).integers(0, config.vocab_size, (2, 6)).astype(np.int32)
    mask = np.ones((2, 5), np.float32)
    tx = make_optimizer()
    moved = {}
    for lr in (0.0, 1e-2):
        start = jax.tree.map(jnp.copy, params)
        new, _, loss = sft_step(
            graphdef, jax.tree.map(jnp.copy, params), tx.init(params), tokens, mask,
            hyperparams(lr, 0.0, 1.0), tx=tx,
        )  # fmt: skip
        assert np.isfinite(float(loss))
        moved[lr] = _max_change(start, new)
    assert moved[0.0] == 0.0
    assert moved[1e-2] > 1e-3


def test_run_sft_stops_at_the_first_evaluation_reaching_the_target(tmp_path, monkeypatch):
    """Training ends at the first evaluation whose temperature-1 accuracy reaches the target
    (here the second, at step 4 of 10); the summary and the saved folder agree."""
    scores = iter([(0.25, 0.5), (0.5, 0.25), (1.0, 1.0)])
    monkeypatch.setattr(llm.sft, "arithmetic_accuracy", lambda *a, **k: next(scores))
    cfg = SFTConfig(
        out_dir=str(tmp_path / "ws"),
        model=SMALL,
        num_train_examples=64,
        num_eval_examples=4,
        batch_size=4,
        max_steps=10,
        eval_every=2,
        progress=False,
        target_accuracy=0.5,
    )
    summary = run_sft(cfg)
    assert [row["step"] for row in summary["history"]] == [2, 4]
    assert summary["steps"] == 4 and summary["reached_target"] is True
    assert (summary["accuracy"], summary["greedy_accuracy"]) == (0.5, 0.25)
    assert json.loads((tmp_path / "ws" / "sft_summary.json").read_text())["steps"] == 4
    assert (tmp_path / "ws" / "config.json").is_file()
