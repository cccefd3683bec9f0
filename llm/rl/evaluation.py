r"""Held-out evaluation: greedy accuracy, mean@k and pass@k with a caller-given key.

For N held-out problems, each answered once greedily and k times at the evaluation
temperature, with :math:`c_{nj} \in \{0, 1\}` whether sample j of problem n is correct:

.. math::  \mathrm{mean@}k = \frac{1}{Nk}\sum_{n,j} c_{nj}, \qquad
           \mathrm{pass@}k = \frac{1}{N}\sum_n \max_j c_{nj}.

"Correct" is the reward's to say (`llm.data.verifiable`): a reward function with an
``is_correct(rewards) -> bool array`` method (the built-in ones, `VerifiableReward`: a
reward nearer the correct level than the wrong one) gets accuracies; without it no accuracy
is reported, only mean rewards. mean@k is also the unbiased estimate of pass@1 from k
samples; it is reported once, as ``eval_accuracy`` (a key that does not change with k).
Keys: sample j of problem n draws from ``fold_in(fold_in(key, n), j)`` (`sample_keys`; step
t of its completion from ``fold_in`` of that and t, `llm.sampler`), so the samples depend
only on the params, the key and the problems, not on ``chunk`` (how many samples share one
sampler call) nor on the batch size of the run that evaluates. Pass one fixed key at every
step and in every run (common random numbers, `llm.rl.keys.evaluation_key`) to compare
checkpoints, and runs of another P or G, without fresh sampling noise between them. (Only
float rounding ties to the batch shapes: a logit a few ulps apart in another chunk can, very
rarely, flip a draw that sits on a boundary.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from llm.data.prompts import PromptRenderer
from llm.data.verifiable import correctness
from llm.rl.rollouts import Sampling, score_completions
from llm.rl.transfer import to_host
from llm.sampler import generate_from_state


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
    """Rewards [N, num_samples] of completions sampled for each of the N ``examples``, at
    most ``chunk`` samples (whole problems, at least one) per sampler call; sample j of
    problem n drawn with ``sample_keys(key, N, num_samples)[n * num_samples + j]``."""
    return sample_completions(
        graphdef,
        params,
        examples,
        renderer,
        reward_fn,
        num_samples=num_samples,
        sampling=sampling,
        key=key,
        chunk=chunk,
    )[0]


def sample_completions(
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
) -> tuple[np.ndarray, list[list[str]]]:
    """`sample_rewards` and the decoded completions: rewards [N, num_samples] and texts, a
    list of N lists of ``num_samples`` strings (sample j of problem n at ``[n][j]``)."""
    if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    if not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
    prompts = [renderer.ids(ex.prompt) for ex in examples]
    keys_R = None if key is None else sample_keys(key, len(prompts), num_samples)
    per_chunk = max(1, chunk // num_samples)  # whole problems per chunk
    rewards, texts = [], []
    for start in range(0, len(prompts), per_chunk):
        stop = min(start + per_chunk, len(prompts))
        rows = None if keys_R is None else keys_R[start * num_samples : stop * num_samples]
        tokens, lengths = _sample(
            graphdef, params, prompts[start:stop], sampling, rows, num_samples
        )
        decoded = renderer.decode(tokens, lengths)
        rewards.append(score_completions(reward_fn, examples[start:stop], decoded, num_samples))
        texts += [list(decoded[i : i + num_samples]) for i in range(0, len(decoded), num_samples)]
    return np.concatenate(rewards).reshape(len(examples), num_samples), texts


@functools.partial(jax.jit, static_argnames=("num_problems", "num_samples"))
def _sample_keys(key, *, num_problems: int, num_samples: int) -> jax.Array:
    fold = jax.vmap(jax.random.fold_in, in_axes=(None, 0))
    problem_keys_N = fold(key, jnp.arange(num_problems, dtype=jnp.uint32))
    keys_NxK = jax.vmap(fold, in_axes=(0, None))(
        problem_keys_N, jnp.arange(num_samples, dtype=jnp.uint32)
    )
    return keys_NxK.reshape(num_problems * num_samples)


def sample_keys(key: jax.Array, num_problems: int, num_samples: int) -> jax.Array:
    """The [num_problems * num_samples] row keys, problem-major: ``fold_in(fold_in(key, n),
    j)`` for sample j of problem n (what the chunk and the batch size cannot change)."""
    return _sample_keys(key, num_problems=int(num_problems), num_samples=int(num_samples))


def _sample(graphdef, params, prompts, sampling: Sampling, row_keys, num_samples: int):
    """(tokens, lengths) on the host: the sampler with per-row keys."""
    out = generate_from_state(
        graphdef,
        params,
        prompts,
        row_keys=row_keys,
        num_samples=num_samples,
        **sampling.generate_kwargs(),
    )
    return to_host(out.tokens), to_host(out.lengths)


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


def accuracy_metrics(greedy_hits_N: np.ndarray, sampled_hits_NxK: np.ndarray) -> dict[str, float]:
    """Accuracies from per-problem correctness: greedy [N] and k samples [N, k] (bool).

    ``eval_greedy_accuracy``; ``eval_accuracy`` = mean@k, the fraction of correct samples
    (also the unbiased pass@1 estimate; one key, whatever k, so it is not repeated as
    ``eval_mean@k``); for k > 1 ``eval_pass@k``, the fraction of problems with at least one
    correct sample.
    """
    greedy_hits_N = np.asarray(greedy_hits_N, bool)
    sampled_hits_NxK = np.asarray(sampled_hits_NxK, bool)
    if sampled_hits_NxK.ndim != 2 or greedy_hits_N.shape != sampled_hits_NxK.shape[:1]:
        raise ValueError(
            f"need greedy hits [N] and sampled hits [N, k], got {greedy_hits_N.shape} "
            f"and {sampled_hits_NxK.shape}"
        )
    k = sampled_hits_NxK.shape[1]
    metrics = {
        "eval_greedy_accuracy": float(greedy_hits_N.mean()),
        "eval_accuracy": float(sampled_hits_NxK.mean()),
    }
    if k > 1:
        metrics[f"eval_pass@{k}"] = float(sampled_hits_NxK.any(axis=1).mean())
    return metrics


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
    reward says what is correct, the `accuracy_metrics`: ``eval_greedy_accuracy``,
    ``eval_accuracy`` (mean@k) and, for k > 1, ``eval_pass@k``.
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
    is_correct = correctness(reward_fn)
    if is_correct is not None:
        metrics |= accuracy_metrics(is_correct(greedy_N), is_correct(sampled_NxK))
    return metrics
