"""Held-out evaluation's numbers (`llm.rl.evaluation`) and the step statistics' accuracy
(`llm.rl.metrics.sample_stats`) on hand-made rewards with known correctness; which keys each
problem's samples get, whatever the chunking (with a model: test_evaluation_keys.py)."""

import jax
import numpy as np
import pytest

from llm.data.datasets import Example
from llm.data.rewards import VerifiableReward, arithmetic_reward
from llm.rl import evaluation
from llm.rl.metrics import sample_stats
from llm.rl.rollouts import Sampling

# 2 problems x 4 samples on the +1/-1 scale: problem 0 right twice, problem 1 never
SAMPLED_NxK = np.array([[1.0, -1.0, -1.0, 1.0], [-1.0, -1.0, -1.0, -1.0]])
GREEDY_N = np.array([-1.0, -1.0])


def _evaluate(monkeypatch, reward_fn, greedy_N=GREEDY_N, sampled_NxK=SAMPLED_NxK):
    """`evaluate` with the sampling replaced by the hand-made rewards."""
    monkeypatch.setattr(evaluation, "problem_rewards", lambda *a, **k: (greedy_N, sampled_NxK))
    k = sampled_NxK.shape[1]
    return evaluation.evaluate(
        None, None, [None] * len(greedy_N), None, reward_fn, key=None, sampling=None,
        num_samples=k,
    )  # fmt: skip


def test_pass_at_k_and_mean_at_k_values(monkeypatch):
    metrics = _evaluate(monkeypatch, VerifiableReward(arithmetic_reward))
    assert metrics == {
        "eval_greedy_reward": -1.0,
        "eval_reward": -0.5,  # (2 - 6) / 8
        "eval_greedy_accuracy": 0.0,
        "eval_accuracy": 0.25,  # mean@4 = pass@1: 2 of 8 samples
        "eval_pass@4": 0.5,  # problem 0 has a correct sample, problem 1 none
    }
    # every problem solved by some sample, greedy right on one
    sampled = np.array([[1.0, -1.0, -1.0, -1.0], [-1.0, 1.0, 1.0, 1.0]])
    metrics = _evaluate(
        monkeypatch, VerifiableReward(arithmetic_reward), np.array([1.0, -1.0]), sampled
    )
    assert metrics["eval_accuracy"] == 0.5 and metrics["eval_pass@4"] == 1.0
    assert metrics["eval_greedy_accuracy"] == 0.5


def test_one_sample_reports_no_pass_at_k(monkeypatch):
    metrics = _evaluate(
        monkeypatch, VerifiableReward(arithmetic_reward), GREEDY_N, SAMPLED_NxK[:, :1]
    )
    assert metrics["eval_accuracy"] == 0.5
    assert not any(key.startswith("eval_pass@") for key in metrics)


def test_a_plain_reward_gets_rewards_but_no_accuracy(monkeypatch):
    metrics = _evaluate(monkeypatch, lambda prompts, completions, **columns: [0.0])
    assert metrics == {"eval_greedy_reward": -1.0, "eval_reward": -0.5}


def test_accuracy_metrics_checks_shapes():
    with pytest.raises(ValueError, match=r"\[N, k\]"):
        evaluation.accuracy_metrics(np.ones(3, bool), np.ones((2, 4), bool))


def test_step_accuracy_counts_the_correct_samples():
    rewards_PxG = np.array([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    args = (rewards_PxG, np.zeros_like(rewards_PxG), np.ones(8), np.ones(8, bool))
    stats = sample_stats(*args, VerifiableReward(arithmetic_reward, scale="01").is_correct)
    assert stats["accuracy"] == 3 / 8
    assert "accuracy" not in sample_stats(*args, None)


class _Renderer:
    """Prompt ids: the question's index; completions: the sampled row's key, as text."""

    def ids(self, question):
        return [int(question)]

    def decode(self, tokens, lengths):
        return [" ".join(map(str, row)) for row in np.asarray(tokens)]


def test_each_problem_gets_its_own_keys_whatever_the_chunk(monkeypatch):
    """sample_rewards hands the sampler, chunk by chunk, exactly the keys
    ``sample_keys(key, N, k)`` of the problems in the chunk, in order: the chunk cannot
    change which key a sample draws from. (The sampler is replaced by one that echoes each
    row's key data.)"""

    def echo_sampler(graphdef, params, prompts, sampling, row_keys, num_samples):
        assert row_keys.shape == (len(prompts) * num_samples,)
        return np.asarray(jax.random.key_data(row_keys)), np.full(len(row_keys), 2)

    monkeypatch.setattr(evaluation, "_sample", echo_sampler)
    examples = [Example(str(n), "0") for n in range(7)]
    seen = {}

    def record(prompts, completions, answer, **columns):
        seen.setdefault(chunk, []).extend(zip(prompts, completions, strict=True))
        return [0.0] * len(prompts)

    key, k = jax.random.key(3), 3
    for chunk in (1, k, 2 * k, 5 * k, 256):
        evaluation.sample_rewards(
            None, None, examples, _Renderer(), record,
            num_samples=k, sampling=Sampling(max_new_tokens=2), key=key, chunk=chunk,
        )  # fmt: skip
    expected = [
        (str(n), " ".join(map(str, np.asarray(jax.random.key_data(row)))))
        for n, row in zip(np.repeat(range(7), k), evaluation.sample_keys(key, 7, k), strict=True)
    ]
    assert all(rows == expected for rows in seen.values()), seen.keys()
    assert len({c for _, c in expected}) == 7 * k


def test_sample_completions_returns_each_problems_texts_with_its_rewards(monkeypatch):
    def echo_sampler(graphdef, params, prompts, sampling, row_keys, num_samples):
        return np.asarray(jax.random.key_data(row_keys)), np.full(len(row_keys), 2)

    monkeypatch.setattr(evaluation, "_sample", echo_sampler)
    examples = [Example(str(n), "0") for n in range(5)]

    def length_reward(prompts, completions, answer, **columns):
        return [float(len(c)) for c in completions]

    key, k = jax.random.key(1), 3
    args = dict(num_samples=k, sampling=Sampling(max_new_tokens=2), key=key, chunk=4)
    rewards, texts = evaluation.sample_completions(
        None, None, examples, _Renderer(), length_reward, **args
    )
    assert len(texts) == 5 and all(len(row) == k for row in texts)
    assert rewards.tolist() == [[float(len(t)) for t in row] for row in texts]
    keys = np.asarray(jax.random.key_data(evaluation.sample_keys(key, 5, k)))
    assert texts[4][2] == " ".join(map(str, keys[4 * k + 2]))  # sample j of problem n
    same = evaluation.sample_rewards(None, None, examples, _Renderer(), length_reward, **args)
    np.testing.assert_array_equal(same, rewards)
