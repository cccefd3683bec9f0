"""`llm.rl.keys`: the run's keys are distinct; the jitted sampling key is the eager one."""

import jax
import numpy as np
import pytest
from flax import nnx

from llm.rl import keys


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
