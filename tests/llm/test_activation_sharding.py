"""The sharded train step constrains the model's activations by logical axis
(`llm.models.activations`): rows on fsdp, heads and MLP columns on tp (queries, keys, values,
attended values, gate/up columns); nothing without a mesh.

Read from the lowered step on fsdp=4 x tp=2 (8 simulated CPU devices, tests/conftest.py): the
tiny qwen2 has D = 64, 4 query heads, 2 key/value heads, F = 128."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llm.models.activations import activation_sharding, constrain
from llm.models.sharding import make_mesh, param_shardings
from llm.models.tiny import tiny_config
from llm.models.transformer import Transformer
from llm.rl.batch import build_batch
from llm.rl.checkpoint import abstract_like
from llm.rl.losses import AsymRE
from llm.rl.optimizer import OptSpec, hyperparams
from llm.rl.train_step import row_specs, step_functions
from llm.rl.transfer import batch_to_global

N = 16
_CONSTRAINT = re.compile(r"sdy\.sharding_constraint .*<@mesh, \[(.*)\]> : tensor<([\dx]+)xf32>")


@pytest.fixture(scope="module")
def model():
    return Transformer(tiny_config("qwen2", num_hidden_layers=1), rngs=nnx.Rngs(0))


def _constraints(model, prompts: int, group: int) -> dict[tuple, set[str]]:
    """{activation shape: its sharding specs} of the lowered step for prompts x group rows."""
    graphdef, state = nnx.split(model)
    params, mesh = nnx.to_pure_dict(state), make_mesh("fsdp=4,tp=2")
    shardings = nnx.to_pure_dict(param_shardings(model, mesh))
    B = prompts * group
    rows_spec, prompts_spec, num_rows = row_specs(mesh, B, 1, group)
    fns = step_functions(
        graphdef, abstract_like(params, shardings), mesh, shardings, AsymRE(), OptSpec(),
        rows_spec, prompt_spec=prompts_spec, num_rows=num_rows,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    host = build_batch(
        [[5, 6, 7]] * B, rng.integers(6, 300, size=(B, N)).astype(np.int32), np.full(B, N),
        np.ones(B, np.float32), pad_token_id=0, group_size=group, row_multiple=4,
    )  # fmt: skip
    batch = batch_to_global(host, fns.batch_sharding)
    p = jax.device_put(params, shardings)
    text = fns.step.lower(p, fns.init_opt(p), batch, hyperparams(1e-3, 0.0, 1.0), {}).as_text()
    found: dict[tuple, set[str]] = {}
    for spec, shape in _CONSTRAINT.findall(text):
        found.setdefault(tuple(int(d) for d in shape.split("x")), set()).add(spec)
    return found


def test_no_mesh_no_constraint():
    x = jnp.ones((4, 3))
    assert constrain(x, ("batch", "embed")) is x
    with activation_sharding(make_mesh("fsdp=4,tp=2")), pytest.raises(ValueError, match="axes"):
        constrain(x, ("batch",))


def test_rows_on_fsdp_heads_and_mlp_on_tp(model):
    """4 prompts x 2 samples: 4 prompt rows (prefix, 16 slots) and 8 completion rows (15
    teacher-forced positions), both on fsdp."""
    found = _constraints(model, prompts=4, group=2)
    heads, mlp = '{"fsdp"}, {}, {"tp"}, {}', '{"fsdp"}, {}, {}, {"tp"}'
    assert not [shape for shape in found if len(shape) == 3]  # the residual: XLA's choice
    for rows, length in ((4, 16), (8, N - 1)):
        assert found[(rows, length, 4, 16)] == {heads}  # queries, attended values
        assert found[(rows, length, 2, 16)] == {heads}  # keys, values (2 heads on tp=2)
        assert found[(rows, length, 2, 128)] == {mlp}  # gate and up columns


def test_rows_the_data_axis_cannot_split_stay_whole(model):
    """1 prompt x 8 samples: the one prompt row is replicated, the 8 completion rows are not."""
    found = _constraints(model, prompts=1, group=8)
    assert found[(1, 16, 4, 16)] == {'{}, {}, {"tp"}, {}'}
    assert found[(8, N - 1, 4, 16)] == {'{"fsdp"}, {}, {"tp"}, {}'}
