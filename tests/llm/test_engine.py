"""The rollout engine seam (`llm.rl.engine`): the trainer samples and refreshes only through
``engine.sync`` / ``engine.generate``; a plugged-in engine sees every refresh with its version
and every rollout with the version that samples it; the dense engine is the sampler."""

import jax
import numpy as np
import pytest

from llm.errors import ConfigError
from llm.models.tiny import make_tiny_checkpoint
from llm.rl.engine import (
    DenseEngine,
    EngineContext,
    EngineOutput,
    RaggedEngine,
    RolloutEngine,
    make_engine,
)
from llm.rl.rollouts import Sampling
from llm.rl.step import behaviour_version
from llm.sampler import generate_from_state
from llm.trainer import TrainConfig, train


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "qwen2", "qwen2"))


def _cfg(model_path, tmp_path, **kw):
    base = dict(
        model_path=model_path,
        task="arithmetic",
        task_kwargs={"num_examples": 32},
        num_steps=4,
        prompts_per_step=2,
        samples_per_prompt=2,
        max_new_tokens=4,
        learning_rate=1e-2,
        refresh_every=2,
        max_staleness=1,
        eval_prompts=0,
        mesh="fsdp=1",
        mesh_subset=True,
        out_dir=str(tmp_path / "run"),
        progress=False,
        tensorboard=False,
    )
    return TrainConfig(**(base | kw))


class RecordingEngine:
    """The dense engine, recording the versions it is synced to and samples with."""

    def __init__(self, ctx: EngineContext, log: dict):
        self.inner, self.log = DenseEngine.from_context(ctx), log

    def sync(self, params, version):
        self.log["sync"].append(version)
        return self.inner.sync(params, version)

    def generate(self, behaviour, prompts, sampling, key, *, num_samples, version):
        self.log["generate"].append(version)
        return self.inner.generate(
            behaviour, prompts, sampling, key, num_samples=num_samples, version=version
        )


def test_a_plugged_in_engine_serves_every_refresh_and_rollout(model_path, tmp_path):
    """... and the learner scores pi under the sampling transform: at step 0 (on-policy)
    GRPO's ratio is 1 at T = 0.7, top_p = 0.9."""
    cfg = _cfg(model_path, tmp_path, loss="grpo", temperature=0.7, top_p=0.9)
    log = {"sync": [], "generate": []}
    rows = train(cfg, engine=lambda ctx: RecordingEngine(ctx, log))
    plain = train(cfg.replace(out_dir=str(tmp_path / "plain")))
    assert log["sync"] == [0, 0, 2]  # init_state's mu, then the refreshes at steps 0 and 2
    assert log["generate"] == [behaviour_version(cfg, t) for t in range(4)] == [0, 0, 0, 2]
    assert [r["behaviour_version"] for r in rows] == log["generate"]
    for mine, theirs in zip(rows, plain, strict=True):  # the same samples, the same updates
        assert mine["loss"] == theirs["loss"] and mine["reward_mean"] == theirs["reward_mean"]
    assert rows[0]["logratio_abs"] < 1e-5 and abs(rows[0]["ratio_mean"] - 1) < 1e-5
    assert rows[0]["outside_nucleus"] == 0
    # the ragged engine: the same completions; mu's log-probs to float rounding, which
    # GRPO's ratio carries into the loss (to ~1e-6), so the updates agree to rounding
    ragged = train(cfg.replace(rollout_engine="ragged", out_dir=str(tmp_path / "ragged")))
    for mine, theirs in zip(ragged, plain, strict=True):
        assert mine["reward_mean"] == theirs["reward_mean"]
        assert mine["completion_len"] == theirs["completion_len"]
        np.testing.assert_allclose(mine["loss"], theirs["loss"], rtol=1e-4, atol=1e-6)


def test_dense_engine_is_the_sampler():
    from flax import nnx

    from llm.models.tiny import random_model, tiny_config

    graphdef, state = nnx.split(random_model(tiny_config("llama")))
    params = nnx.to_pure_dict(state)
    engine = DenseEngine(graphdef)
    assert isinstance(engine, RolloutEngine) and engine.sync(params, 3) is params
    sampling = Sampling(max_new_tokens=5, temperature=0.7, top_p=0.9, eos_token_id=2)
    prompts, key = [[5, 6, 7], [8]], jax.random.key(1)
    out = engine.generate(params, prompts, sampling, key, num_samples=2, version=3)
    ref = generate_from_state(
        graphdef, params, prompts, max_new_tokens=5, temperature=0.7, top_p=0.9,
        eos_token_id=2, key=key, num_samples=2,
    )  # fmt: skip
    assert isinstance(out, EngineOutput) and out.version == 3
    for name in ("tokens", "logprobs", "lengths", "finished"):
        np.testing.assert_array_equal(getattr(out, name), getattr(ref, name), err_msg=name)


def test_make_engine_names_what_is_wrong():
    ctx = EngineContext(graphdef=None, split=None, copy=None)
    assert isinstance(make_engine("dense", ctx), DenseEngine)
    assert isinstance(make_engine("ragged", ctx), RaggedEngine)
    with pytest.raises(
        ValueError, match="must be one of dense, ragged, ragged-kernels, got 'vllm'"
    ):
        make_engine("vllm", ctx)
    with pytest.raises(TypeError, match="sync.*generate.*got object"):
        make_engine("dense", ctx, factory=lambda ctx: object())


def test_config_refuses_an_unknown_engine_and_a_position_limit_overrun(model_path, tmp_path):
    with pytest.raises(ValueError, match="rollout_engine"):
        _cfg(model_path, tmp_path, rollout_engine="vllm").validate()
    with pytest.raises(ConfigError, match=r"max_new_tokens: .*\(2048\): at most 2047, got 2048"):
        train(_cfg(model_path, tmp_path, max_new_tokens=2048))
