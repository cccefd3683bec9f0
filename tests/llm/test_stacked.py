"""Stacked layer storage (llm.models.stacked): the same model, its layers held [groups, ...];
what the trainer trains with ``scan_layers``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec

from llm.models.hf_io import load_hf, save_hf
from llm.models.lora import LoRASpec, add_lora, merge_lora
from llm.models.peft_io import save_peft_adapter
from llm.models.sharding import make_mesh, param_shardings
from llm.models.stacked import is_stacked, layer_major, stack_blocks, unstack_blocks
from llm.models.tiny import make_tiny_checkpoint, random_model, tiny_config
from llm.models.transformer import init_cache, positions_from_mask, set_runtime_options

FAMILIES = ("llama", "qwen2", "qwen3", "mistral", "gemma3")


def _inputs(B=3, T=9, seed=0):
    rng = np.random.default_rng(seed)
    tokens = jnp.asarray(rng.integers(3, 250, size=(B, T)), jnp.int32)
    mask = np.ones((B, T), np.int32)
    mask[1, :3] = 0
    mask = jnp.asarray(mask)
    return tokens, mask, positions_from_mask(mask)


def _pair(family, layers, lora=False):
    """(per-layer model, the same weights stored stacked)."""
    model = random_model(tiny_config(family, num_hidden_layers=layers))
    if lora:
        add_lora(model, LoRASpec(rank=2, alpha=4.0), rngs=nnx.Rngs(1))
    stacked = stack_blocks(nnx.clone(model))
    return model, stacked


@pytest.mark.parametrize("family", FAMILIES)
def test_layout_and_round_trip(family):
    """Gemma's tiny config has period 2: 5 layers are 2 groups of 2 and 1 layer left over."""
    model, stacked = _pair(family, 5)
    period = stacked.stacked.period
    assert is_stacked(stacked) and len(stacked.layers) == 0
    assert stacked.stacked.num_groups == 5 // period
    assert len(stacked.stacked.rest) == 5 % period
    q = stacked.stacked.groups[0].attn.q.get_value()
    assert q.shape == (5 // period, *model.layers[0].attn.q.get_value().shape)
    np.testing.assert_array_equal(q[1], model.layers[period].attn.q.get_value())
    back = unstack_blocks(nnx.clone(stacked))
    assert not is_stacked(back) and len(back.layers) == 5
    for a, b in zip(
        jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(back)), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert nnx.graphdef(back) == nnx.graphdef(model)


@pytest.mark.parametrize("family", FAMILIES)
def test_stacked_forward_and_cache_match_per_layer(family):
    tokens, mask, positions = _inputs()
    outs = []
    for model in _pair(family, 5):
        graphdef, state = nnx.split(model)

        def run(state, graphdef=graphdef):
            m = nnx.merge(graphdef, state)
            h = m.hidden_states(tokens, positions=positions, attention_mask=mask)
            cache = init_cache(m.config, batch_size=3, max_len=12, dtype=jnp.float32)
            slots = jnp.concatenate([mask, jnp.ones((3, 3), mask.dtype)], axis=1)
            _, cache = m.cached_hidden_states(
                tokens, cache, 0, positions=positions, attention_mask=slots
            )
            step, cache = m(
                tokens[:, -1:], positions=positions[:, -1:] + 1, attention_mask=slots,
                cache=cache, cache_index=9,
            )  # fmt: skip
            return h, step, cache.k, cache.v

        outs.append(jax.jit(run)(state))
    for per_layer, stacked in zip(*outs, strict=True):
        np.testing.assert_allclose(np.asarray(stacked), np.asarray(per_layer), atol=3e-5)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_gradients_are_the_per_layer_gradients_stacked(family):
    tokens, mask, positions = _inputs(seed=1)
    grads = []
    for model in _pair(family, 5, lora=True):
        set_runtime_options(model, remat="layer")
        graphdef, state = nnx.split(model)

        def loss(params, graphdef=graphdef):
            h = nnx.merge(graphdef, params).hidden_states(
                tokens, positions=positions, attention_mask=mask
            )
            return jnp.sum(jnp.tanh(h) * mask[..., None])

        grads.append(jax.jit(jax.grad(loss))(nnx.to_pure_dict(state)))
    per_layer, stacked = grads
    p = 2 if family == "gemma3" else 1
    for name in ("q", "q_lora"):
        for i in range(4):
            a = per_layer["layers"][i]["attn"][name]
            b = stacked["stacked"]["groups"][i % p]["attn"][name]
            jax.tree.map(
                lambda x, y, g=i // p: np.testing.assert_allclose(
                    np.asarray(y[g]), np.asarray(x), atol=5e-5, rtol=1e-4
                ),
                a,
                b,
            )
    if p == 2:  # the layer left over keeps its own block
        np.testing.assert_allclose(
            np.asarray(stacked["stacked"]["rest"][0]["attn"]["q"]),
            np.asarray(per_layer["layers"][4]["attn"]["q"]),
            atol=5e-5,
            rtol=1e-4,
        )


def test_the_group_axis_is_never_sharded():
    mesh = make_mesh("fsdp=4,tp=2")
    model, stacked = _pair("qwen2", 4, lora=True)
    flat = nnx.to_pure_dict(param_shardings(model, mesh))
    flat_stacked = nnx.to_pure_dict(param_shardings(stacked, mesh))
    for name in ("q", "o"):
        spec = flat["layers"][0]["attn"][name].spec
        stacked_spec = flat_stacked["stacked"]["groups"][0]["attn"][name].spec
        assert stacked_spec == PartitionSpec(None, *spec), (name, spec, stacked_spec)
    assert any(axis is not None for axis in flat["layers"][0]["attn"]["q"].spec)


def test_layer_major_interleaves_groups_in_layer_order():
    model, stacked = _pair("gemma3", 5)
    _, params = layer_major(stacked)
    _, reference = layer_major(model)
    for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a))


def test_per_layer_functions_refuse_a_stacked_model(tmp_path):
    _, stacked = _pair("llama", 3, lora=True)
    for call in (
        lambda: save_hf(stacked, None, tmp_path / "hf"),
        lambda: merge_lora(stacked),
        lambda: save_peft_adapter(stacked, tmp_path / "adapter"),
        lambda: add_lora(stack_blocks(random_model(tiny_config("llama", num_hidden_layers=3))),
                         LoRASpec(rank=2, alpha=4.0), rngs=nnx.Rngs(0)),
    ):  # fmt: skip
        with pytest.raises(ValueError, match="unstack_blocks"):
            call()


def test_one_group_is_left_per_layer():
    model = stack_blocks(random_model(tiny_config("llama", num_hidden_layers=1)))
    assert not is_stacked(model) and len(model.layers) == 1


def test_export_of_stacked_params_writes_the_per_layer_files(tmp_path):
    from llm.models.export import export

    model, stacked = _pair("qwen2", 4, lora=True)
    config = model.config
    export(*nnx.split(model), config, tmp_path / "a")
    graphdef, state = nnx.split(stacked)
    export(graphdef, nnx.to_pure_dict(state), config, tmp_path / "b")
    a, _ = load_hf(tmp_path / "a")
    b, _ = load_hf(tmp_path / "b")
    for x, y in zip(jax.tree.leaves(nnx.state(a)), jax.tree.leaves(nnx.state(b)), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two LoRA runs of the trainer on one tiny qwen2 (4 layers, fsdp=4,tp=2), layers
    unrolled and scanned (stored stacked)."""
    from llm.trainer import TrainConfig, train

    root = tmp_path_factory.mktemp("stacked")
    model_path = str(make_tiny_checkpoint(root / "qwen2", "qwen2", num_hidden_layers=4))
    out = {}
    for scan in (False, True):
        cfg = TrainConfig(
            model_path=model_path, task_kwargs={"num_examples": 32}, num_steps=2,
            prompts_per_step=2, samples_per_prompt=4, max_new_tokens=5, eval_prompts=0,
            learning_rate=2e-2, mesh="fsdp=4,tp=2", out_dir=str(root / f"run{scan}"),
            progress=False, tensorboard=False, lora_rank=2, scan_layers=scan, export_hf=True,
        )  # fmt: skip
        out[scan] = (cfg, *train(cfg, return_state=True))
    return out


@pytest.mark.slow
def test_the_trainer_trains_the_stacked_params_alike(runs):
    (_, rows, state), (_, rows_s, state_s) = runs[False], runs[True]
    assert "stacked" in state_s.params and "layers" not in state_s.params
    losses = [r["loss"] for r in rows if "loss" in r]
    losses_s = [r["loss"] for r in rows_s if "loss" in r]
    assert len(losses) == len(losses_s) == 2
    np.testing.assert_allclose(losses_s, losses, rtol=1e-3, atol=1e-5)
    moments = jax.tree.leaves(state.opt_state)
    moments_s = jax.tree.leaves(state_s.opt_state)
    assert len(moments_s) < len(moments)  # one leaf per weight, not one per layer
    q = state_s.params["stacked"]["groups"][0]["attn"]["q_lora"]["a"]
    assert q.shape[0] == 4 and q.sharding.spec[0] is None


@pytest.mark.slow
def test_the_stacked_run_exports_the_per_layer_files(runs):
    cfg, cfg_s = runs[False][0], runs[True][0]
    a, _ = load_hf(f"{cfg.out_dir}/hf")
    b, _ = load_hf(f"{cfg_s.out_dir}/hf")
    tokens, mask, positions = _inputs()
    np.testing.assert_allclose(
        np.asarray(b.hidden_states(tokens, positions=positions, attention_mask=mask)),
        np.asarray(a.hidden_states(tokens, positions=positions, attention_mask=mask)),
        atol=1e-3,
    )


def test_a_resumed_run_keeps_the_checkpoints_layout():
    from llm.errors import ConfigError
    from llm.rl.resume import check_config
    from llm.trainer import TrainConfig

    saved = TrainConfig(model_path="m", scan_layers=True)
    check_config(saved.to_dict(), saved)
    with pytest.raises(ConfigError, match=r"scan_layers"):
        check_config(saved.to_dict(), saved.replace(scan_layers=False))
