"""Logits parity of llm.models.transformer.Transformer with transformers' PyTorch models (the reference).

Tiny random checkpoints (llm.models.tiny) of each family are loaded by both frameworks:
Llama with "llama3" RoPE scaling, Qwen2 with q/k/v biases and tied embeddings, Qwen3 with
q/k RMSNorm and an explicit head_dim, Mistral with a sliding window (8) shorter than the
sequences, Gemma 3 with alternating sliding/global layers and their two RoPEs. float32: max
abs diff <= 1e-4.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from llm.models.hf_io import load_hf  # noqa: E402
from llm.models.rope import inverse_frequencies  # noqa: E402
from llm.models.tiny import make_tiny_checkpoint  # noqa: E402
from llm.models.transformer import init_cache, positions_from_mask  # noqa: E402

FAMILIES = ("llama", "qwen2", "qwen3", "mistral", "gemma3")
WINDOWED = ("mistral", "gemma3")
TOL_F32 = 1e-4


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    return {f: make_tiny_checkpoint(root / f, f, seed=i) for i, f in enumerate(FAMILIES)}


@pytest.fixture(scope="module")
def torch_models(checkpoints):
    return {
        f: transformers.AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32).eval()
        for f, p in checkpoints.items()
    }


@pytest.fixture(scope="module")
def jax_models(checkpoints):
    return {f: load_hf(p)[0] for f, p in checkpoints.items()}


@nnx.jit
def _forward(model, tokens, positions=None, attention_mask=None):
    return model(tokens, positions=positions, attention_mask=attention_mask)


def _torch_logits(model, tokens, attention_mask=None, position_ids=None):
    kwargs = {}
    if attention_mask is not None:
        kwargs["attention_mask"] = torch.tensor(np.asarray(attention_mask))
    if position_ids is not None:
        kwargs["position_ids"] = torch.tensor(np.asarray(position_ids))
    with torch.no_grad():
        return model(torch.tensor(np.asarray(tokens)), **kwargs).logits.float().numpy()


def _left_padded(rng, lengths, vocab, pad=0):
    T = max(lengths)
    tokens = np.full((len(lengths), T), pad, np.int32)
    mask = np.zeros((len(lengths), T), np.int32)
    for b, n in enumerate(lengths):
        tokens[b, T - n :] = rng.integers(3, vocab, n)
        mask[b, T - n :] = 1
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
    return tokens, mask, positions


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_transformers_float32(family, jax_models, torch_models):
    model = jax_models[family]
    tokens = np.random.default_rng(0).integers(0, model.config.vocab_size, (3, 37))
    ours = np.asarray(_forward(model, jnp.asarray(tokens)))
    ref = _torch_logits(torch_models[family], tokens)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert np.abs(ref).max() > 1.0  # a real signal, not near-zero logits
    np.testing.assert_allclose(ours, ref, atol=TOL_F32, rtol=0)


def test_family_features_are_exercised(jax_models):
    llama, qwen2, qwen3, mistral, gemma3 = (jax_models[f].config for f in FAMILIES)
    assert llama.rope_type == "llama3"
    assert qwen2.attention_bias and qwen2.tie_word_embeddings and not qwen2.attention_out_bias
    assert qwen3.use_qk_norm and qwen3.head_dim * qwen3.num_attention_heads != qwen3.hidden_size
    bias = np.asarray(jax_models["qwen2"].layers[0].attn.q_bias[...])
    assert np.abs(bias).max() > 0.01  # biases are random, so dropping them would fail parity
    assert mistral.sliding_window == 8 and set(mistral.all_layer_types) == {"sliding_attention"}
    assert gemma3.all_layer_types == ("sliding_attention", "full_attention")
    assert gemma3.sliding_window == 8 and gemma3.tie_word_embeddings and gemma3.use_qk_norm
    assert gemma3.rope_type == "linear" and gemma3.rope_local_theta != gemma3.rope_theta
    assert gemma3.query_pre_attn_scalar != gemma3.head_dim
    assert gemma3.head_dim * gemma3.num_attention_heads != gemma3.hidden_size
    post = np.asarray(jax_models["gemma3"].layers[0].mlp_post_norm.weight[...])
    assert 0.01 < np.abs(post).max() < 1  # (1 + w) norms: w random around 0


@pytest.mark.parametrize("family", WINDOWED)
def test_sliding_window_matters(family, jax_models, torch_models):
    """Without the window the logits past position 8 move away from transformers'."""
    model = jax_models[family]
    tokens = np.random.default_rng(5).integers(0, model.config.vocab_size, (2, 24))
    no_window = model.config.replace(sliding_window=10**6)
    plain = nnx.eval_shape(lambda: type(model)(no_window, rngs=nnx.Rngs(0)))
    nnx.update(plain, nnx.state(model))  # same weights and RoPEs, windows wider than T
    ref = _torch_logits(torch_models[family], tokens)
    ours = np.asarray(_forward(plain, jnp.asarray(tokens)))
    window = model.config.sliding_window
    np.testing.assert_allclose(ours[:, :window], ref[:, :window], atol=TOL_F32, rtol=0)
    assert np.abs(ours[:, window:] - ref[:, window:]).max() > 1e-2


def test_gemma3_rope_frequencies_match_transformers(jax_models, torch_models):
    config = jax_models["gemma3"].config
    rotary = torch_models["gemma3"].model.rotary_emb
    for local, kind in ((False, "full_attention"), (True, "sliding_attention")):
        ref = getattr(rotary, f"{kind}_inv_freq").numpy()
        np.testing.assert_allclose(inverse_frequencies(config, local), ref, rtol=1e-6)


def test_llama3_rope_frequencies_match_transformers(jax_models, torch_models):
    config = jax_models["llama"].config
    ref = torch_models["llama"].model.rotary_emb.inv_freq.numpy()
    ours = inverse_frequencies(config)
    np.testing.assert_allclose(ours, ref, rtol=1e-6)
    unscaled = inverse_frequencies(config.replace(rope_scaling=None))
    assert np.abs(unscaled - ours).max() > 1e-3 * np.abs(ours).max()  # the scaling matters


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_left_padding_with_attention_mask(family, jax_models, torch_models):
    model = jax_models[family]
    rng = np.random.default_rng(1)
    tokens, mask, positions = _left_padded(rng, [19, 7, 12], model.config.vocab_size)
    np.testing.assert_array_equal(np.asarray(positions_from_mask(mask)), positions)
    ours = np.asarray(_forward(model, tokens, positions, mask))
    ref = _torch_logits(torch_models[family], tokens, mask, positions)
    real = mask.astype(bool)
    np.testing.assert_allclose(ours[real], ref[real], atol=TOL_F32, rtol=0)
    assert np.isfinite(ours).all()
    # the most padded row equals that prompt alone, unpadded
    alone = np.asarray(_forward(model, tokens[1:2, real[1]]))[0]
    np.testing.assert_allclose(ours[1][real[1]], alone, atol=TOL_F32, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "gemma3"])  # mistral: as llama
def test_bfloat16_within_tolerance(family, checkpoints, torch_models):
    """bf16 weights and matmuls, float32 logits: error vs the float32 reference at most 2x
    that of transformers' own bf16 model, plus 0.02."""
    model, _ = load_hf(checkpoints[family], dtype="bfloat16")
    assert model.layers[0].attn.q[...].dtype == jnp.bfloat16
    tokens = np.random.default_rng(2).integers(0, model.config.vocab_size, (2, 24))
    ours = np.asarray(_forward(model, tokens))
    assert ours.dtype == np.float32
    ref32 = _torch_logits(torch_models[family], tokens)
    torch_bf16 = transformers.AutoModelForCausalLM.from_pretrained(
        checkpoints[family], dtype=torch.bfloat16
    ).eval()
    ref16 = _torch_logits(torch_bf16, tokens)
    ours_err, torch_err = np.abs(ours - ref32).max(), np.abs(ref16 - ref32).max()
    assert ours_err <= 2 * torch_err + 0.02, (ours_err, torch_err)
    assert ours_err > 0  # it really ran in bf16


# mistral's cached windows: tests/llm/test_sampler.py::test_sliding_window_greedy_matches_own_forward
@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "gemma3"])
def test_kv_cache_decode_matches_full_forward(family, jax_models):
    """Prefill a left-padded prompt, then decode one token at a time: every position's
    logits equal the full forward pass over the whole sequence (16 > gemma3's window)."""
    model = jax_models[family]
    rng = np.random.default_rng(3)
    lengths, new = [9, 4], 7
    prompt, prompt_mask, _ = _left_padded(rng, lengths, model.config.vocab_size)
    B, P = prompt.shape
    cont = rng.integers(3, model.config.vocab_size, (B, new)).astype(np.int32)
    tokens = np.concatenate([prompt, cont], axis=1)
    mask = np.concatenate([prompt_mask, np.ones((B, new), np.int32)], axis=1)
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
    full = np.asarray(_forward(model, tokens, positions, mask))

    S = P + new + 3  # spare slots stay masked out
    kv_mask = np.zeros((B, S), np.int32)
    kv_mask[:, : P + new] = mask
    step = nnx.jit(
        lambda m, t, p, k, c, i: m(t, positions=p, attention_mask=k, cache=c, cache_index=i)
    )
    cache = init_cache(model.config, B, S, jnp.float32)
    logits, cache = step(model, prompt, positions[:, :P], kv_mask, cache, jnp.int32(0))
    got = [np.asarray(logits)]
    for t in range(P, P + new):
        logits, cache = step(
            model, tokens[:, t : t + 1], positions[:, t : t + 1], kv_mask, cache, jnp.int32(t)
        )
        got.append(np.asarray(logits))
    got = np.concatenate(got, axis=1)
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], full[real], atol=TOL_F32, rtol=0)
    assert cache.k.shape == (
        model.config.num_hidden_layers,
        B,
        S,
        model.config.num_key_value_heads,
        model.config.head_dim,
    )
    assert np.all(np.asarray(cache.k)[:, :, P + new :] == 0)  # nothing written past idx + T


@pytest.mark.slow
def test_kv_cache_chunked_prefill(jax_models):
    """Two prefill chunks of T = 5 give the same logits as one forward pass."""
    model = jax_models["qwen3"]
    tokens = np.random.default_rng(4).integers(3, model.config.vocab_size, (2, 10)).astype(np.int32)
    full = np.asarray(_forward(model, tokens))
    kv_mask = np.ones((2, 16), np.int32)
    cache = init_cache(model.config, 2, 16)
    step = nnx.jit(lambda m, t, c, i: m(t, attention_mask=kv_mask, cache=c, cache_index=i))
    first, cache = step(model, tokens[:, :5], cache, 0)
    second, cache = step(model, tokens[:, 5:], cache, 5)
    np.testing.assert_allclose(np.concatenate([first, second], 1), full, atol=TOL_F32, rtol=0)


def test_hidden_states_times_unembedding_is_logits(jax_models):
    model = jax_models["qwen3"]
    tokens = np.arange(3, 23, dtype=np.int32).reshape(2, 10)
    hidden, unembedding = nnx.jit(lambda m: (m.hidden_states(tokens), m.unembedding()))(model)
    assert hidden.shape == (2, 10, model.config.hidden_size)
    assert unembedding.shape == (model.config.hidden_size, model.config.vocab_size)
    np.testing.assert_allclose(
        np.asarray(hidden @ unembedding), np.asarray(_forward(model, tokens)), atol=1e-5, rtol=0
    )


@pytest.mark.slow
def test_model_is_differentiable_under_jit(jax_models):
    model = jax_models["llama"]
    tokens = jnp.arange(3, 19, dtype=jnp.int32).reshape(2, 8)

    def loss(m):
        return -jax.nn.log_softmax(m(tokens))[..., 0].mean()

    grads = nnx.jit(nnx.grad(loss))(model)
    norms = [float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)]
    assert all(np.isfinite(norms)) and min(norms) > 0  # every weight gets a gradient


def test_bad_inputs_raise(jax_models):
    model = jax_models["llama"]
    with pytest.raises(ValueError, match=r"tokens must be an integer array of shape \[B, T\]"):
        model(jnp.zeros((4,), jnp.int32))
    with pytest.raises(ValueError, match="tokens must be an integer"):
        model(jnp.zeros((1, 4), jnp.float32))
    with pytest.raises(ValueError, match=r"positions must have shape \[B, T\]"):
        model(jnp.zeros((1, 4), jnp.int32), positions=jnp.zeros((1, 3), jnp.int32))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \[B, T\]"):
        model(jnp.zeros((1, 4), jnp.int32), attention_mask=jnp.ones((1, 5)))
    cache = init_cache(model.config, 1, 8)
    with pytest.raises(ValueError, match="cache_index"):
        model(jnp.zeros((1, 4), jnp.int32), cache=cache)
    with pytest.raises(ValueError, match=r"attention_mask must have shape \[B, S\]"):
        model(
            jnp.zeros((1, 4), jnp.int32),
            attention_mask=jnp.ones((1, 4)),
            cache=cache,
            cache_index=0,
        )
    with pytest.raises(ValueError, match=r"cache.k and cache.v must have shape"):
        model(jnp.zeros((2, 4), jnp.int32), cache=cache, cache_index=0)
