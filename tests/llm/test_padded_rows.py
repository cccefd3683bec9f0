"""Rows that the data axis does not divide are padded with weightless copies, never
replicated (`llm.rl.batch.padded_rows`): the padded, sharded step is the unpadded one.

3 prompts x 2 samples = 6 rows on fsdp=4 x tp=2 (8 simulated CPU devices, tests/conftest.py):
each step pads to 8 rows (4 prompt rows), placed on the data axis.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec

from asymre_jax import NORMALIZATIONS
from llm.models.sharding import make_mesh, param_shardings
from llm.models.tiny import tiny_config
from llm.models.transformer import Transformer
from llm.rl.batch import build_batch, padded_rows
from llm.rl.checkpoint import abstract_like
from llm.rl.losses import AsymRE, loss_weights
from llm.rl.train_step import DATA_AXIS, row_specs, step_functions
from llm.rl.transfer import batch_to_global
from tests.llm.test_live_tokens import OPT, _assert_same_step, _step

P, G, N = 3, 2, 16


@pytest.fixture(scope="module")
def ro():
    model = Transformer(tiny_config("qwen2", num_hidden_layers=1), rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(6, 300, size=int(rng.integers(3, 9))).tolist() for _ in range(P)]
    lengths = rng.integers(2, N + 1, size=P * G).astype(np.int32)
    tokens = rng.integers(6, 300, size=(P * G, N)).astype(np.int32)
    tokens[np.arange(N)[None, :] >= lengths[:, None]] = 0
    return dict(
        model=model,
        graphdef=graphdef,
        params=nnx.to_pure_dict(state),
        rows=[p for p in prompts for _ in range(G)],
        tokens=tokens,
        lengths=lengths,
        advantages=rng.normal(size=P * G).astype(np.float32),
        behaviour=-rng.uniform(0.5, 3.0, size=(P * G, N)).astype(np.float32),
    )


def _batch(ro, **kw):
    return build_batch(
        ro["rows"], ro["tokens"], ro["lengths"], ro["advantages"], pad_token_id=0,
        behaviour_logprobs_BxN=ro["behaviour"], group_size=G, **kw,
    )  # fmt: skip


def test_padded_rows_are_whole_groups_the_data_axis_divides():
    assert padded_rows(6, 2, 4) == 8  # g = 2: lcm 4
    assert padded_rows(9, 3, 2) == 12  # g = 3: lcm 6
    assert padded_rows(4, 8, 8) == 8  # part of one group: g = 4 rows share the prompt
    assert padded_rows(3, 2, 4) == 4  # no sharing (g = 1)
    assert padded_rows(16, 4, 8) == 16 and padded_rows(5, 5, 1) == 5  # nothing to pad
    for bad in ((0, 1, 1), (4, 2, 0), (4.0, 2, 2)):
        with pytest.raises(ValueError, match="ints >= 1"):
            padded_rows(*bad)


def test_padding_rows_copy_the_first_group_and_weigh_nothing(ro):
    plain, padded = _batch(ro), _batch(ro, row_multiple=4)
    assert padded.completions.shape[:2] == (1, 8) and padded.prompt_tokens.shape[:2] == (1, 4)
    for name in plain._fields:
        real = getattr(padded, name)[:, : getattr(plain, name).shape[1]]
        np.testing.assert_array_equal(real, getattr(plain, name), err_msg=name)
    np.testing.assert_array_equal(padded.prompt_tokens[0, 3], plain.prompt_tokens[0, 0])
    np.testing.assert_array_equal(padded.completions[0, 6:], plain.completions[0, :2])
    for name in ("loss_mask", "advantages", "behaviour_logprobs", "ref_logprobs"):
        assert not getattr(padded, name)[0, 6:].any(), name
    two = _batch(ro, micro_batches=2, row_multiple=4)  # 3 rows, no sharing: 1 copy each
    assert two.completions.shape[:2] == (2, 4) and two.prompt_tokens.shape[:2] == (2, 4)


def test_weights_count_only_the_real_rows(ro):
    plain, padded = _batch(ro).loss_mask, _batch(ro, row_multiple=4).loss_mask
    for normalization in NORMALIZATIONS:
        w = loss_weights(padded, normalization, rows=P * G)
        np.testing.assert_allclose(w[:, : P * G], loss_weights(plain, normalization), rtol=1e-6)
        assert not np.asarray(w[:, P * G :]).any()
    for bad in (0, 9, 6.0):
        with pytest.raises(ValueError, match="rows must be an int"):
            loss_weights(padded, "sequence", rows=bad)


def test_row_specs_keep_the_rows_on_the_data_axis():
    mesh = make_mesh("fsdp=4,tp=2")
    rows, prompts, num_rows = row_specs(mesh, P * G, 1, G)
    assert rows == PartitionSpec(None, DATA_AXIS) == prompts and num_rows == P * G
    assert row_specs(mesh, 8, 1, 2) == (PartitionSpec(None, DATA_AXIS),) * 2 + (None,)
    assert row_specs(None, P * G, 1, G) == (PartitionSpec(), PartitionSpec(), None)
    with pytest.raises(ValueError, match="num_rows"):
        step_functions(None, None, None, None, AsymRE(), OPT, num_rows=0)


def test_padded_sharded_step_is_the_unpadded_step(ro):
    """AsymRE with the "constant" normalisation (B N in the denominator): loss, gradient
    and drift metrics of the padded step on fsdp=4 x tp=2 equal the unsharded step's."""
    loss, mesh = AsymRE(normalization="constant"), make_mesh("fsdp=4,tp=2")
    plain = step_functions(ro["graphdef"], None, None, None, loss, OPT)
    expected = _step(ro, plain, jax.tree.map(jnp.asarray, _batch(ro)))
    shardings = nnx.to_pure_dict(param_shardings(ro["model"], mesh))
    rows_spec, prompts_spec, num_rows = row_specs(mesh, P * G, 1, G)
    sharded = step_functions(
        ro["graphdef"], abstract_like(ro["params"], shardings), mesh, shardings, loss, OPT,
        rows_spec, prompt_spec=prompts_spec, num_rows=num_rows,
    )  # fmt: skip
    batch = batch_to_global(_batch(ro, row_multiple=4), sharded.batch_sharding)
    assert batch.completions.shape[:2] == (1, 8)
    assert batch.completions.sharding.spec == PartitionSpec(None, DATA_AXIS)
    assert batch.prompt_tokens.sharding.spec == PartitionSpec(None, DATA_AXIS)
    params = jax.device_put(jax.tree.map(jnp.array, ro["params"]), shardings)
    _assert_same_step(expected, _step(ro, sharded, batch, params), ro["params"])
