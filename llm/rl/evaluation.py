r"""Held-out evaluation: greedy accuracy, mean@k and pass@k with a caller-given key.

For N held-out problems, each answered once greedily and k times at the evaluation
temperature, with :math:`c_{nj} \in \{0, 1\}` whether sample j of problem n is correct:

.. math::  \mathrm{mean@}k = \frac{1}{Nk}\sum_{n,j} c_{nj}, \qquad
           \mathrm{pass@}k = \frac{1}{N}\sum_n \max_j c_{nj}.

"Correct" is the reward's to say: a reward function with a ``correct_reward`` attribute (the
built-in ones: +1 on the pm1 scale, 1 on the 01 scale) counts samples scoring exactly that;
without it no accuracy is reported, only mean rewards. The samples depend only on the params,
the key and ``chunk``: pass one fixed key at every step and in every run (common random
numbers) to compare checkpoints without fresh sampling noise between them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import numpy as np

from llm.data.prompts import PromptRenderer
from llm.rl.rollouts import Sampling, sample, score_completions


def correct_reward(reward_fn: Callable) -> float | None:
    """The reward value that counts as a correct answer, or None when the reward has none."""
    value = getattr(reward_fn, "correct_reward", None)
    return None if value is None else float(value)


def sample_rewards(
    graphdef,
    params,
    examples: Sequence,
    renderer: PromptRenderer,
    reward_fn: Callable,
    *,
    num_samples: int,
    sampling: Sampling,
    key: jax.Array | None,
    chunk: int = 256,
) -> np.ndarray:
    """Rewards [N, num_samples] of completions sampled for each of the N ``examples``."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    prompts = [renderer.ids(ex.prompt) for ex in examples]
    per_chunk = max(1, chunk // num_samples)  # whole problems per chunk
    rewards = []
    for start in range(0, len(prompts), per_chunk):
        # the key of row start * num_samples, as when every sample was its own prompt row
        sub_key = None if key is None else jax.random.fold_in(key, start * num_samples)
        tokens, lengths, _, _ = sample(
            graphdef, params, prompts[start : start + per_chunk], sampling, sub_key, num_samples
        )
        batch = examples[start : start + per_chunk]
        rewards.append(
            score_completions(reward_fn, batch, renderer.decode(tokens, lengths), num_samples)
        )
    return np.concatenate(rewards).reshape(len(examples), num_samples)


def problem_rewards(
    graphdef,
    params,
    examples: Sequence,
    renderer: PromptRenderer,
    reward_fn: Callable,
    *,
    key: jax.Array,
    sampling: Sampling,
    num_samples: int = 1,
    chunk: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Per problem: the greedy completion's reward [N] and ``num_samples`` sampled ones [N, k]."""
    examples = list(examples)
    if not examples:
        raise ValueError("examples must not be empty")
    common = dict(renderer=renderer, reward_fn=reward_fn, chunk=chunk)
    greedy = sampling._replace(temperature=0.0)
    greedy_N = sample_rewards(
        graphdef, params, examples, num_samples=1, sampling=greedy, key=None, **common
    )[:, 0]
    sampled_NxK = sample_rewards(
        graphdef, params, examples, num_samples=num_samples, sampling=sampling, key=key, **common
    )
    return greedy_N, sampled_NxK


def evaluate(
    graphdef,
    params,
    examples: Sequence,
    renderer: PromptRenderer,
    reward_fn: Callable,
    *,
    key: jax.Array,
    sampling: Sampling,
    num_samples: int = 1,
    chunk: int = 256,
) -> dict[str, float]:
    """Greedy and sampled (``num_samples`` = k per problem) scores of ``params`` on ``examples``.

    Returns ``eval_greedy_reward``, ``eval_reward`` (mean over the k samples) and, when the
    reward defines correctness, ``eval_greedy_accuracy``, ``eval_accuracy`` (mean@k) and,
    for k > 1, ``eval_pass@k`` and ``eval_mean@k``.
    """
    greedy_N, sampled_NxK = problem_rewards(
        graphdef,
        params,
        examples,
        renderer,
        reward_fn,
        key=key,
        sampling=sampling,
        num_samples=num_samples,
        chunk=chunk,
    )
    metrics = {
        "eval_greedy_reward": float(greedy_N.mean()),
        "eval_reward": float(sampled_NxK.mean()),
    }
    correct = correct_reward(reward_fn)
    if correct is not None:
        hits_NxK = sampled_NxK == correct
        metrics["eval_greedy_accuracy"] = float(np.mean(greedy_N == correct))
        metrics["eval_accuracy"] = float(hits_NxK.mean())
        if num_samples > 1:
            metrics[f"eval_pass@{num_samples}"] = float(hits_NxK.any(axis=1).mean())
            metrics[f"eval_mean@{num_samples}"] = float(hits_NxK.mean())
    return metrics
