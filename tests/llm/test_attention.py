"""The fused attention (``jax.nn.dot_product_attention``, llm.models.attention) against the
einsum reference the model used before (``attention_impl="einsum"``), the choice of
implementation, and per-layer rematerialisation (``remat``).

Parity of the fused path with transformers: tests/llm/test_model_parity.py (it runs the
model's default path). float32 here: max abs diff <= 1e-5 against the reference.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llm.models.attention import attend, choose_implementation, cudnn_unmet, dense_visibility
from llm.models.config import ModelConfig
from llm.models.tiny import random_model, tiny_config
from llm.models.transformer import init_cache, positions_from_mask, set_runtime_options

FAMILIES = ("llama", "qwen2", "qwen3", "mistral", "gemma3")
TOL = 1e-5


def _left_padded(rng, lengths, vocab):
    T = max(lengths)
    tokens = np.zeros((len(lengths), T), np.int32)
    mask = np.zeros((len(lengths), T), np.int32)
    for b, n in enumerate(lengths):
        tokens[b, T - n :] = rng.integers(3, vocab, n)
        mask[b, T - n :] = 1
    return tokens, mask


@nnx.jit
def _logits(model, tokens, positions, mask):
    return model(tokens, positions=positions, attention_mask=mask)


@nnx.jit
def _cached(model, tokens, positions, mask, cache, index):
    return model(tokens, positions=positions, attention_mask=mask, cache=cache, cache_index=index)


def _both(model, fn):
    """fn(model) with the fused path, then with the einsum reference."""
    fused = np.asarray(fn(set_runtime_options(model, attention_impl="auto")))
    reference = np.asarray(fn(set_runtime_options(model, attention_impl="einsum")))
    set_runtime_options(model, attention_impl="auto")
    return fused, reference


WINDOWED = ("mistral", "gemma3")  # the families with sliding-window layers


def _fast_for(families, **params):
    """Params of ``families``, slow (CI only) for the others: the fast lane keeps one plain
    family and the windowed ones, the slow lane runs them all."""
    return [
        pytest.param(
            *params.values(),
            family,
            id="-".join([*params, family]) if params else family,
            marks=[] if family in families else [pytest.mark.slow],
        )
        for family in FAMILIES
    ]


# T = 5 < 8 = TINY_WINDOW < 19: windows longer and shorter than the sequence; the short one
# only matters with a window (fast for the windowed families, slow for the others)
@pytest.mark.parametrize(
    "lengths,family",
    _fast_for(FAMILIES, lengths0=[19, 7, 12]) + _fast_for(WINDOWED, lengths1=[5, 3]),
)
def test_fused_matches_einsum_reference_left_padded(family, lengths):
    model = random_model(tiny_config(family), seed=1)
    tokens, mask = _left_padded(np.random.default_rng(0), lengths, model.config.vocab_size)
    positions = positions_from_mask(mask)
    fused, reference = _both(model, lambda m: _logits(m, tokens, positions, mask))
    real = mask.astype(bool)
    assert np.abs(reference[real]).max() > 0.1
    np.testing.assert_allclose(fused[real], reference[real], atol=TOL, rtol=0)
    # pads see no key: both average every value, so even their rows agree
    np.testing.assert_allclose(fused, reference, atol=TOL, rtol=0)


@pytest.mark.parametrize("family", _fast_for(("llama", "gemma3")))  # gemma3: both layer kinds
def test_fused_matches_einsum_reference_cache_prefill_and_decode(family):
    """Prefill at slot 0 (the causal form) then decode at traced slots (the dense form)."""
    model = random_model(tiny_config(family), seed=2)
    rng = np.random.default_rng(1)
    prompt, prompt_mask = _left_padded(rng, [11, 6], model.config.vocab_size)
    B, P, new = 2, prompt.shape[1], 4
    S = P + new + 2
    kv_mask = np.zeros((B, S), np.int32)
    kv_mask[:, :P] = prompt_mask
    kv_mask[:, P : P + new] = 1
    cont = rng.integers(3, model.config.vocab_size, (B, new)).astype(np.int32)
    positions = positions_from_mask(kv_mask)

    def run(m):
        cache = init_cache(m.config, B, S)
        out, cache = _cached(m, prompt, positions[:, :P], kv_mask, cache, 0)
        steps = [out]
        for t in range(new):
            slot = P + t
            step = (cont[:, t : t + 1], positions[:, slot : slot + 1], kv_mask)
            out, cache = _cached(m, *step, cache, jnp.int32(slot))
            steps.append(out)
        return jnp.concatenate(steps, axis=1)

    fused, reference = _both(model, run)
    np.testing.assert_allclose(fused, reference, atol=TOL, rtol=0)


def test_attend_gqa_masks_and_windows_match_reference():
    """attend itself: K = 2 < H = 6 heads, causal + key padding, windows, T < S."""
    rng = np.random.default_rng(3)
    B, T, S, H, K, E = 2, 7, 9, 6, 2, 16
    q = jnp.asarray(rng.normal(size=(B, T, H, E)), jnp.float32)
    k, v = (jnp.asarray(rng.normal(size=(B, S, K, E)), jnp.float32) for _ in range(2))
    keys = jnp.asarray(rng.random((B, 1, 1, S)) > 0.3)
    for mask in (None, keys):
        for window in (None, 3, 100):
            got = attend(q, k, v, mask, scale=0.3, causal=True, window=window)
            visible = dense_visibility(mask, T, S, True, window)
            want = attend(q, k, v, visible, scale=0.3, causal=False, requested="einsum")
            np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    dense = jnp.asarray(rng.random((B, 1, T, S)) > 0.5)
    got = attend(q, k, v, dense, scale=0.3, causal=False)
    want = attend(q, k, v, dense, scale=0.3, causal=False, requested="einsum")
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    # the window really acts: query 6 with window 3 sees keys 4..6 only
    visible = dense_visibility(None, T, S, True, 3)[0, 0]
    assert np.flatnonzero(np.asarray(visible[6])).tolist() == [4, 5, 6]


def test_attend_rejects_bad_masks():
    q = jnp.zeros((1, 4, 2, 8))
    k = jnp.zeros((1, 4, 1, 8))
    with pytest.raises(ValueError, match=r"mask must be \[B, 1, T or 1, S=4\]"):
        attend(q, k, k, jnp.ones((1, 4, 4), bool), scale=1.0, causal=True)
    with pytest.raises(ValueError, match="without causal, mask must be"):
        attend(q, k, k, jnp.ones((1, 1, 1, 4), bool), scale=1.0, causal=False)
    with pytest.raises(ValueError, match="window is only read with causal"):
        attend(q, k, k, None, scale=1.0, causal=False, window=2)


GPU = dict(platform="gpu", dtype="bfloat16", head_dim=64, T=8, S=8, dense_mask=False)


def test_implementation_choice():
    cpu = dict(GPU, platform="cpu")
    assert choose_implementation("auto", **cpu) is None  # XLA on CPU
    assert choose_implementation("xla", **GPU) == "xla"
    assert choose_implementation("einsum", **GPU) == "einsum"
    assert choose_implementation("auto", **GPU) == "cudnn"
    assert choose_implementation("cudnn", **GPU) == "cudnn"
    for change, reason in (
        (dict(platform="cpu"), "NVIDIA GPU"),
        (dict(dtype="float32"), "bfloat16 or float16"),
        (dict(head_dim=72 + 4), "multiple of 8"),
        (dict(head_dim=256), "<= 128"),
        (dict(dense_mask=True, T=7), "even query and key lengths"),
    ):
        facts = dict(GPU, **change)
        assert reason in cudnn_unmet(**facts)
        assert choose_implementation("auto", **facts) is None  # the fallback: XLA
        with pytest.raises(ValueError, match="attention_impl='cudnn' cannot run"):
            choose_implementation("cudnn", **facts)
    assert cudnn_unmet(**dict(GPU, head_dim=256), capability="9.0") is None  # Hopper: 256
    with pytest.raises(ValueError, match="attention_impl must be one of"):
        choose_implementation("flash", **GPU)


def test_model_options_are_checked():
    model = random_model(tiny_config("llama"))
    with pytest.raises(ValueError, match="attention_impl='cudnn' cannot run"):
        set_runtime_options(model, attention_impl="cudnn")(jnp.ones((1, 4), jnp.int32))
    with pytest.raises(ValueError, match="unknown runtime options"):
        set_runtime_options(model, rope_theta=1.0)
    with pytest.raises(ValueError, match="remat must be one of"):
        tiny_config("llama", remat="all")
    with pytest.raises(ValueError, match="attn_logit_softcapping=50.0 is not supported"):
        ModelConfig.from_hf_dict(
            {**tiny_config("gemma3").to_hf_dict(), "attn_logit_softcapping": 50.0}
        )


@pytest.mark.parametrize(
    "family,remat", [("llama", "layer"), pytest.param("gemma3", "dots", marks=pytest.mark.slow)]
)
def test_remat_gradients_equal_plain(family, remat):
    """Through the trainer's path (prompt into the cache, completions on top): gradients
    with per-layer rematerialisation equal those without (float32)."""
    model = random_model(tiny_config(family), seed=4)
    rng = np.random.default_rng(5)
    prompt, prompt_mask = _left_padded(rng, [6, 3], model.config.vocab_size)
    cont = jnp.asarray(rng.integers(3, model.config.vocab_size, (2, 5)), jnp.int32)
    kv_mask = jnp.concatenate([prompt_mask, jnp.ones((2, 5), jnp.int32)], axis=1)

    def loss(m):
        cache = init_cache(m.config, 2, kv_mask.shape[1])
        pos = positions_from_mask(prompt_mask)
        h, cache = m.cached_hidden_states(prompt, cache, 0, pos, kv_mask)
        pos = jnp.sum(prompt_mask, 1, keepdims=True) + jnp.arange(5)
        h2, _ = m.cached_hidden_states(cont, cache, prompt.shape[1], pos, kv_mask)
        return jnp.sum(h[:, -1] ** 2) + jnp.sum(jnp.tanh(h2) * jnp.arange(5)[:, None])

    grad = nnx.jit(nnx.grad(loss))
    plain = jax.tree.leaves(nnx.to_pure_dict(nnx.state(grad(model))))
    remat_model = set_runtime_options(model, remat=remat)
    graphdef, state = nnx.split(remat_model)
    jaxpr = str(jax.make_jaxpr(lambda st: loss(nnx.merge(graphdef, st)))(state))
    assert jaxpr.count("remat") == model.config.num_hidden_layers * 2  # 2 calls, every layer
    again = jax.tree.leaves(nnx.to_pure_dict(nnx.state(grad(remat_model))))
    assert max(float(jnp.abs(g).max()) for g in plain) > 1e-3
    for a, b in zip(plain, again, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_trainer_remat_option_reaches_the_model(tmp_path):
    """TrainConfig.remat is set on every module of the model the trainer's step functions
    run (the setup's graph); no compilation: test_trainer_remat_option_same_run (slow)."""
    from llm.models.tiny import make_tiny_checkpoint
    from llm.rl.state import make_setup
    from llm.trainer import TrainConfig

    path = str(make_tiny_checkpoint(tmp_path / "qwen2", "qwen2"))
    for remat in ("none", "layer"):
        cfg = TrainConfig(
            model_path=path, task="arithmetic", task_kwargs={"num_examples": 16},
            eval_prompts=0, mesh="fsdp=1", mesh_subset=True, out_dir=str(tmp_path / remat),
            progress=False, tensorboard=False, remat=remat,
        )  # fmt: skip
        setup, params = make_setup(cfg)
        model = nnx.merge(setup.graphdef, params)
        configs = [getattr(m, "config", None) for _, m in nnx.iter_modules(model)]
        configs = [c for c in configs if isinstance(c, ModelConfig)]
        assert len(configs) > model.config.num_hidden_layers
        assert {c.remat for c in configs} == {remat}


@pytest.mark.slow
def test_trainer_remat_option_same_run(tmp_path, count_compiles):
    """TrainConfig.remat reaches the trainer's model: same rewards, losses and grad norms."""
    from llm.models.tiny import make_tiny_checkpoint
    from llm.trainer import TrainConfig, train

    path = str(make_tiny_checkpoint(tmp_path / "qwen2", "qwen2"))
    runs = {}
    for remat in ("none", "layer"):
        cfg = TrainConfig(
            model_path=path,
            task="arithmetic",
            task_kwargs={"num_examples": 16},
            num_steps=2,
            prompts_per_step=2,
            samples_per_prompt=2,
            max_new_tokens=5,
            learning_rate=1e-2,
            eval_prompts=0,
            mesh="fsdp=1",
            mesh_subset=True,
            out_dir=str(tmp_path / remat),
            progress=False,
            tensorboard=False,
            remat=remat,
        )
        count_compiles.clear()
        runs[remat] = train(cfg)
        # the rematerialised model is another program: its step compiles anew
        assert any("step" in name for name in count_compiles), count_compiles
    for plain, rematted in zip(runs["none"], runs["layer"], strict=True):
        assert plain["reward_mean"] == rematted["reward_mean"]
        for key in ("loss", "grad_norm"):
            np.testing.assert_allclose(rematted[key], plain[key], rtol=1e-4, atol=1e-6)
