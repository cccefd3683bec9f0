"""`llm.rl.keys`: the run's keys are distinct; the jitted sampling key is the eager one; the
evaluation's per-sample keys are the documented derivation."""

import jax
import numpy as np
import pytest
from flax import nnx

from llm.rl import keys
from llm.rl.evaluation import sample_keys


def _data(key):
    return tuple(np.asarray(jax.random.key_data(key)).ravel().tolist())


@pytest.mark.parametrize("seed", [0, 3])
def test_no_two_uses_of_a_run_share_a_key(seed):
    base = keys.base_key(seed)
    sampling = {_data(keys.sampling_key(base, t)) for t in range(64)}
    assert len(sampling) == 64
    lora_draws = nnx.Rngs(params=keys.lora_init_key(seed))  # what add_lora draws from
    others = [_data(lora_draws.params()) for _ in range(4)] + [_data(keys.evaluation_key(base))]
    assert not sampling & set(others) and len(set(others)) == len(others)


def test_the_jitted_sampling_key_equals_the_eager_fold_ins():
    """One jitted dispatch with a traced uint32 step gives the eager derivation's key."""
    base = keys.base_key(5)
    for step in (0, 1, 2**20):
        expected = jax.random.fold_in(jax.random.fold_in(base, step), keys.SAMPLING_SALT)
        assert _data(keys.sampling_key(base, step)) == _data(expected)
    with pytest.raises(ValueError, match="step"):
        keys.sampling_key(base, -1)


def test_evaluation_sample_keys_are_the_documented_fold_ins_and_distinct():
    """Sample j of problem n: fold_in(fold_in(eval key, n), j); a problem's keys do not
    depend on how many problems there are."""
    eval_key = keys.evaluation_key(keys.base_key(2))
    rows = sample_keys(eval_key, 5, 3)
    assert rows.shape == (15,)
    for n, j in ((0, 0), (1, 2), (4, 1)):
        expected = jax.random.fold_in(jax.random.fold_in(eval_key, n), j)
        assert _data(rows[n * 3 + j]) == _data(expected)
    assert len({_data(k) for k in rows}) == 15
    assert [_data(k) for k in sample_keys(eval_key, 2, 3)] == [_data(k) for k in rows[:6]]
