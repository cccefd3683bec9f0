"""The ragged sampler draws the dense sampler's completions (tokens, log-probs, lengths).

Every family, ragged prompts, G > 1, EOS at different steps, completions longer than the
first history window (so the window grows) and a batch that shrinks (so rows are gathered
and put aside). Log-probs differ only by float rounding: the ragged attention merges the
prompt and the history by log-sum-exp where the dense cache takes one softmax.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import llm.ragged.sampler as ragged_sampler
from llm.models.tiny import random_model, tiny_config
from llm.ragged import generate_ragged
from llm.sampler import generate_from_state

N = 48  # > MIN_WINDOW: the history window grows once
EOS = list(range(1, 11))  # ~3% a step under a random model: most rows end inside 48 steps
PROMPTS = [[5, 9, 13], [7, 8, 9, 10, 11, 12, 13, 14, 15], [20, 21, 22, 23, 24]]
SAMPLING = {  # one setting per family, so every path runs on one family at least
    "llama": dict(temperature=1.0),
    "qwen2": dict(temperature=0.7, top_p=0.9),
    "qwen3": dict(temperature=0.0),
    "mistral": dict(temperature=1.3, top_p=0.95),
    "gemma3": dict(temperature=1.0),
}


@pytest.fixture
def counted(monkeypatch):
    """Counts the compactions and window growths of the ragged calls of a test."""
    calls = {"compact": 0, "grow": 0}

    def counting(name, original):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        return wrapper

    for name in calls:
        fn = getattr(ragged_sampler, f"_{name}")
        monkeypatch.setattr(ragged_sampler, f"_{name}", counting(name, fn))
    return calls


def _both(family, **kwargs):
    model = random_model(tiny_config(family), seed=1)
    graphdef, state = nnx.split(model)
    args = dict(max_new_tokens=N, eos_token_id=EOS, num_samples=4, min_batch_bucket=4) | kwargs
    if args.get("temperature", 1.0) > 0 and "row_keys" not in args:
        args["key"] = jax.random.key(3)
    dense = generate_from_state(graphdef, state, PROMPTS, **args)
    return dense, generate_ragged(graphdef, state, PROMPTS, **args)


def _assert_same(dense, ragged):
    np.testing.assert_array_equal(ragged.tokens, dense.tokens)
    np.testing.assert_array_equal(ragged.lengths, dense.lengths)
    np.testing.assert_array_equal(ragged.finished, dense.finished)
    np.testing.assert_allclose(ragged.logprobs, dense.logprobs, atol=1e-5, rtol=0)
    assert int(ragged.steps) == int(dense.steps)


SLOW = {"mistral", "qwen3"}  # their paths (top-p, greedy) also run on qwen2 / the cap test


@pytest.mark.parametrize(
    "family",
    [
        pytest.param(f, marks=pytest.mark.slow) if f in SLOW else f
        for f in sorted(SAMPLING)
        if f != "llama"  # test_the_batch_shrank_and_the_window_grew
    ],
)
def test_ragged_draws_the_dense_completions(family):
    dense, ragged = _both(family, **SAMPLING[family])
    _assert_same(dense, ragged)
    if SAMPLING[family]["temperature"] > 0:  # greedy: a prompt's G rows are one row
        lengths = np.asarray(dense.lengths)
        assert lengths.min() < lengths.max(), "EOS at different steps"


def test_the_batch_shrank_and_the_window_grew(counted):
    """The llama case of the family test, with both paths taken."""
    dense, ragged = _both("llama", **SAMPLING["llama"])
    _assert_same(dense, ragged)
    assert counted["compact"] > 0 and counted["grow"] > 0, counted


def test_row_keys_give_the_same_rows_in_any_batch():
    """Per-row keys: a prompt's rows are the same alone or beside others (dense contract)."""
    keys = jax.random.split(jax.random.key(5), len(PROMPTS) * 4)
    graphdef, state = nnx.split(random_model(tiny_config("llama"), seed=1))
    args = dict(max_new_tokens=N, eos_token_id=EOS, num_samples=4, min_batch_bucket=4)
    together = generate_ragged(graphdef, state, PROMPTS, row_keys=keys, **args)
    alone = generate_ragged(graphdef, state, PROMPTS[1:2], row_keys=keys[4:8], **args)
    np.testing.assert_array_equal(alone.tokens, together.tokens[4:8])
    np.testing.assert_allclose(alone.logprobs, together.logprobs[4:8], atol=1e-5, rtol=0)


def test_bad_num_samples_is_refused():
    model = random_model(tiny_config("llama"))
    graphdef, state = nnx.split(model)
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        generate_ragged(graphdef, state, PROMPTS, max_new_tokens=4, num_samples=0)


def test_windows_double_up_to_max_new_tokens():
    assert ragged_sampler.windows(16) == [16]
    assert ragged_sampler.windows(32) == [32]
    assert ragged_sampler.windows(100) == [32, 64, 100]
    assert ragged_sampler.windows(128) == [32, 64, 128]


def test_a_batch_with_no_eos_runs_to_the_cap():
    dense, ragged = _both("llama", temperature=1.0, eos_token_id=None)
    _assert_same(dense, ragged)
    assert bool(jnp.all(ragged.lengths == N)) and not bool(jnp.any(ragged.finished))
