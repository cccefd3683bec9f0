"""Mesh sharding of the model on 8 simulated CPU devices (tests/conftest.py sets XLA_FLAGS)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from llm.models.hf_io import load_hf
from llm.models.sharding import (
    logical_to_spec,
    make_mesh,
    param_shardings,
    parse_mesh_spec,
    shard_model,
)
from llm.models.tiny import make_tiny_checkpoint, random_model, tiny_config

pytestmark = pytest.mark.skipif(
    len(jax.devices()) < 8, reason="needs 8 devices (XLA_FLAGS host platform device count)"
)


@nnx.jit
def _forward(model, tokens):
    return model(tokens)


@pytest.fixture(scope="module")
def mesh():
    return make_mesh("fsdp=4,tp=2")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    # Qwen3 with 4 kv heads, so kv heads shard over tp=2; vocab 320 and hidden 64 divide.
    return make_tiny_checkpoint(
        tmp_path_factory.mktemp("shard") / "q3", "qwen3", num_key_value_heads=4
    )


def test_make_mesh_and_spec_parsing():
    mesh = make_mesh("fsdp=4,tp=2")
    assert dict(mesh.shape) == {"fsdp": 4, "tp": 2}
    assert dict(make_mesh({"tp": 2}, allow_subset=True).shape) == {"fsdp": 1, "tp": 2}
    assert dict(make_mesh("fsdp=-1,tp=2").shape) == {"fsdp": 4, "tp": 2}
    assert parse_mesh_spec(" fsdp = 2 , tp=1") == {"fsdp": 2, "tp": 1}
    with pytest.raises(ValueError, match="needs 16 devices, have 8"):
        make_mesh("fsdp=8,tp=2")
    with pytest.raises(ValueError, match="unknown mesh axes"):
        make_mesh("dp=8")
    with pytest.raises(ValueError, match="must look like"):
        make_mesh("fsdp:4")
    with pytest.raises(TypeError, match="str or a dict"):
        make_mesh(8)


def test_rule_table_drops_axes_that_do_not_divide(mesh):
    assert logical_to_spec(("embed", "heads", "head_dim"), (64, 4, 16), mesh) == PartitionSpec(
        "fsdp", "tp", None
    )
    # 3 kv heads cannot split over tp=2: replicated along tp
    assert logical_to_spec(("embed", "kv_heads", "head_dim"), (64, 3, 16), mesh) == PartitionSpec(
        "fsdp", None, None
    )
    assert logical_to_spec(("norm",), (64,), mesh) == PartitionSpec(None)
    # a mesh axis is used at most once per tensor
    assert logical_to_spec(("mlp", "vocab"), (8, 8), mesh) == PartitionSpec("tp", None)


def test_sharded_load_equals_unsharded_and_is_really_sharded(checkpoint, mesh):
    plain, _ = load_hf(checkpoint)
    sharded, config = load_hf(checkpoint, mesh=mesh)
    attn = sharded.layers[0].attn
    expected = {
        "q": ("fsdp", "tp", None),
        "k": ("fsdp", "tp", None),
        "o": ("tp", None, "fsdp"),
    }
    for name, spec in expected.items():
        value = getattr(attn, name)[...]
        assert isinstance(value.sharding, NamedSharding)
        assert value.sharding.spec == PartitionSpec(*spec), name
        assert value.sharding.mesh.shape == mesh.shape
        shard_shape = value.addressable_shards[0].data.shape
        full = value.shape
        assert np.prod(shard_shape) * 8 == np.prod(full), (name, shard_shape, full)
    assert sharded.embed[...].sharding.spec == PartitionSpec("tp", "fsdp")
    assert sharded.lm_head[...].sharding.spec == PartitionSpec("fsdp", "tp")
    assert sharded.layers[1].mlp.down[...].sharding.spec == PartitionSpec("tp", "fsdp")
    assert sharded.final_norm.weight[...].sharding.is_fully_replicated
    tokens = np.random.default_rng(0).integers(0, config.vocab_size, (4, 12)).astype(np.int32)
    np.testing.assert_allclose(
        np.asarray(_forward(sharded, tokens)),
        np.asarray(_forward(plain, tokens)),
        atol=1e-5,
        rtol=0,
    )


@pytest.mark.parametrize("family", ["mistral", "gemma3"])
def test_windowed_families_load_sharded(family, mesh, tmp_path):
    """Sliding-window families on fsdp=4, tp=2: sharded logits equal unsharded ones (the
    sequence, 20, is longer than the window, 8); Gemma's extra norms are replicated."""
    path = make_tiny_checkpoint(tmp_path / family, family, seed=3)
    plain, _ = load_hf(path)
    sharded, config = load_hf(path, mesh=mesh)
    assert sharded.layers[0].attn.k[...].sharding.spec == PartitionSpec("fsdp", "tp", None)
    assert sharded.layers[0].mlp.up[...].sharding.spec == PartitionSpec("fsdp", "tp")
    if family == "gemma3":
        assert sharded.layers[1].mlp_post_norm.weight[...].sharding.is_fully_replicated
    tokens = np.random.default_rng(1).integers(0, config.vocab_size, (4, 20)).astype(np.int32)
    np.testing.assert_allclose(
        np.asarray(_forward(sharded, tokens)),
        np.asarray(_forward(plain, tokens)),
        atol=1e-5,
        rtol=0,
    )


def test_shard_model_and_jit_with_param_shardings(mesh):
    model = random_model(tiny_config("llama"), seed=2)
    tokens = jnp.arange(8 * 6, dtype=jnp.int32).reshape(8, 6) % model.config.vocab_size
    ref = np.asarray(_forward(model, tokens))
    shard_model(model, mesh)
    assert model.layers[0].mlp.gate[...].sharding.spec == PartitionSpec("fsdp", "tp")
    graphdef, state = nnx.split(model)
    shardings = param_shardings(model, mesh)
    batch = NamedSharding(mesh, PartitionSpec("fsdp"))
    fwd = jax.jit(
        lambda s, t: nnx.merge(graphdef, s)(t),
        in_shardings=(shardings, batch),
        out_shardings=NamedSharding(mesh, PartitionSpec("fsdp", None, "tp")),
    )
    out = fwd(state, jax.device_put(tokens, batch))
    assert out.sharding.spec == PartitionSpec("fsdp", None, "tp")
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5, rtol=0)


def test_bfloat16_sharded_load(checkpoint, mesh):
    model, _ = load_hf(checkpoint, dtype="bfloat16", mesh=mesh)
    q = model.layers[1].attn.q[...]
    assert q.dtype == jnp.bfloat16 and q.sharding.spec == PartitionSpec("fsdp", "tp", None)


def test_save_hf_of_sharded_model_round_trips(checkpoint, mesh, tmp_path):
    from llm.models.hf_io import save_hf

    sharded, config = load_hf(checkpoint, mesh=mesh)
    out = save_hf(sharded, config, tmp_path / "resaved", max_shard_bytes=60_000)
    again, _ = load_hf(out)
    for (path, a), (_, b) in zip(
        nnx.to_flat_state(nnx.state(sharded)), nnx.to_flat_state(nnx.state(again)), strict=True
    ):
        np.testing.assert_array_equal(
            np.asarray(a.get_value()), np.asarray(b.get_value()), err_msg=str(path)
        )
