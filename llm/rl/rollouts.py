"""Rollouts: sample G completions per prompt from the behaviour params and score them.

`engine_rollout` (any `llm.rl.engine.RolloutEngine`; `rollout`: the dense sampler) returns
a `Rollout`: the B = P * G completions, their lengths, whether they ended with EOS (host
arrays, fetched in one transfer to detokenise and reward them), their log-probs under the
distribution they were drawn from (the behaviour policy at the sampling temperature / top-p:
what an importance ratio needs; they stay on the device) and the rewards [P, G]. Its
``device`` field keeps the engine's arrays, which the learner reads where they are
(`llm.rl.learn_step`). Row i is prompt i // G, sample i % G (prompt-major); each prompt is
prefilled once for its G samples. A reward function is model-facing code: it must return B
finite floats for any completion text (see `score_completions`).

The learner's layout of these rows is :mod:`llm.rl.batch`; host <-> device transfers are
:mod:`llm.rl.transfer`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from llm.data.prompts import PromptRenderer
from llm.rl.engine import DenseEngine, EngineOutput
from llm.rl.transfer import tree_to_host


class Sampling(NamedTuple):
    """How completions are drawn (see `llm.sampler.generate`)."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    eos_token_id: Sequence[int] | int | None = None
    pad_token_id: int = 0

    def generate_kwargs(self) -> dict:
        """The keyword arguments of `llm.sampler.generate_from_state` for this sampling
        (top-p off when greedy)."""
        return dict(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p if self.temperature > 0 else 1.0,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
        )


class Rollout(NamedTuple):
    """One step's samples; B = P * G rows, prompt-major (row i: prompt i // G).

    ``device``: the engine's `EngineOutput`, whose tokens and log-probs the learner reads on
    the device (None: a rollout made on the host, a replay buffer's; the learner uploads its
    arrays). A rollout whose tokens or log-probs are edited must drop it,
    ``ro._replace(device=None)``: the host fields are then what the learner reads.
    """

    prompts: list[list[int]]  # B prompt token-id lists
    tokens_BxN: np.ndarray  # int32 completion ids, pad after the end
    lengths_B: np.ndarray  # int32, EOS included
    finished_B: np.ndarray  # bool, True where the row emitted EOS
    logprobs_BxN: Any  # float32 log mu(y_t) of the sampling distribution, 0 after the end
    # (numpy, or the engine's device array: np.asarray fetches it)
    rewards_PxG: np.ndarray  # float64
    behaviour_version: int | None = None  # step at which the sampling params were refreshed
    device: EngineOutput | None = None


def score_completions(
    reward_fn: Callable, examples: Sequence, completions: Sequence[str], repeats: int
) -> np.ndarray:
    """Rewards [len(examples) * repeats] of prompt-major completions; must be finite.

    ``reward_fn(prompts, completions, answer=[...], **columns)`` receives the examples' extra
    columns (those every example has) as keyword lists.
    """
    rows = [ex for ex in examples for _ in range(repeats)]
    common = set.intersection(*(set(ex.columns) for ex in examples)) if examples else set()
    columns = {k: [ex.columns[k] for ex in rows] for k in sorted(common - {"answer"})}
    prompts = [ex.prompt for ex in rows]
    answers = [ex.answer for ex in rows]
    rewards = np.asarray(reward_fn(prompts, list(completions), answer=answers, **columns), float)
    if rewards.shape != (len(rows),) or not np.all(np.isfinite(rewards)):
        raise ValueError(
            f"the reward function must return {len(rows)} finite floats, got shape "
            f"{rewards.shape} with {int(np.sum(~np.isfinite(rewards)))} non-finite values"
        )
    return rewards


def engine_rollout(
    engine,
    behaviour,
    examples: Sequence,
    renderer: PromptRenderer,
    reward_fn: Callable,
    *,
    num_samples: int,
    sampling: Sampling,
    key: jax.Array,
    version: int | None = None,
) -> Rollout:
    """Sample ``num_samples`` (G) completions of each of the P ``examples`` from the
    ``behaviour`` params with ``engine`` (`llm.rl.engine.RolloutEngine`) and score them with
    ``reward_fn``; the rollout carries ``version`` (the step whose refresh made mu)."""
    distinct = renderer.repeat(examples, 1)
    prompts = [list(p) for p in distinct for _ in range(num_samples)]
    out = engine.generate(
        behaviour, distinct, sampling, key, num_samples=num_samples, version=version or 0
    )
    tokens_BxN, lengths_B, finished_B = tree_to_host((out.tokens, out.lengths, out.finished))
    texts = renderer.decode(tokens_BxN, lengths_B)
    rewards_B = score_completions(reward_fn, examples, texts, num_samples)
    return Rollout(
        prompts,
        tokens_BxN,
        lengths_B,
        finished_B,
        out.logprobs,  # stays on the device
        rewards_B.reshape(len(examples), num_samples),
        version,
        device=out,
    )


def rollout(
    graphdef,
    behaviour_params,
    examples: Sequence,
    renderer: PromptRenderer,
    reward_fn: Callable,
    *,
    num_samples: int,
    sampling: Sampling,
    key: jax.Array,
) -> Rollout:
    """`engine_rollout` with the dense KV-cache sampler (`llm.rl.engine.DenseEngine`) of
    ``graphdef``: each prompt is prefilled once for its G samples."""
    engine = DenseEngine(graphdef)
    common = dict(num_samples=num_samples, sampling=sampling, key=key)
    return engine_rollout(engine, behaviour_params, examples, renderer, reward_fn, **common)
