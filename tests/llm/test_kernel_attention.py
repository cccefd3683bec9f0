"""The ragged engine's attention on Pallas's GPU decode kernel (interpret mode on the CPU).

The merged partials equal the einsum attention of `llm.ragged.attention` to float rounding:
left-padded prompts (one of them all padding, as a filler prompt is), an empty, a partly
written and a full history, GQA, key lengths the kernel takes and one it does not (the
einsum partial then). Through the sampler, ``decode_kernels=True`` draws the ragged
engine's completions; a model with sliding-window layers falls back to the einsums.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import llm.ragged.kernel_attention as kernel_attention_module
from llm.models.tiny import random_model, tiny_config
from llm.ragged import generate_ragged
from llm.ragged.attention import shared_prompt_attention
from llm.ragged.kernel_attention import kernel_attention, kernel_splits
from llm.rl.engine import EngineContext, RaggedKernelEngine, make_engine
from llm.rl.trainable import ParamSplit
from llm.trainer import TrainConfig


def _inputs(P, G, H, K, E, S, W, real):
    rng = np.random.default_rng(0)

    def f(*shape):
        return jnp.asarray(rng.standard_normal(shape), jnp.float32)

    B = P * G
    arrays = dict(q=f(B, H, E), pk=f(P, S, K, E), pv=f(P, S, K, E), hk=f(B, W, K, E))
    arrays |= dict(hv=f(B, W, K, E), nk=f(B, K, E), nv=f(B, K, E))
    mask = (np.arange(S)[None, :] >= S - np.asarray(real)[:, None]).astype(np.int32)
    return arrays, jnp.asarray(mask)


@pytest.mark.parametrize("S", [32, 24])  # 24: no power-of-two split, the einsum partial
@pytest.mark.parametrize("written", [0, 5, 64])
@pytest.mark.parametrize("use_kernel", [True, False])
def test_merged_partials_equal_the_einsum_attention(S, written, use_kernel):
    P, G, H, K, E, W = 3, 2, 6, 2, 16, 64
    a, mask = _inputs(P, G, H, K, E, S, W, real=[S, 10, 0])
    prompt_visible = jnp.broadcast_to((mask != 0)[:, None, :], (P, G, S))
    history_visible = jnp.broadcast_to(jnp.arange(W)[None, :] < written, (P * G, W))
    want = shared_prompt_attention(
        a["q"], a["pk"], a["pv"], prompt_visible, a["hk"], a["hv"], history_visible,
        a["nk"], a["nv"], scale=0.25,
    )  # fmt: skip
    got = kernel_attention(
        a["q"], a["pk"], a["pv"], mask, a["hk"], a["hv"], written, a["nk"], a["nv"],
        scale=0.25, use_kernel=use_kernel,
    )  # fmt: skip
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)


def test_the_kernel_takes_power_of_two_pieces_only():
    assert [kernel_splits(n, 64) for n in (16, 32, 48, 160, 512, 1024)] == [1, 2, 3, 10, 16, 16]
    assert kernel_splits(200, 64) is None and kernel_splits(8, 64) is None
    assert kernel_splits(64, 24) is None and kernel_splits(64, 8) is None  # head dims


@pytest.mark.parametrize("family", ["llama", "gemma3"])  # gemma3: sliding layers, einsums
def test_decode_kernels_draw_the_ragged_completions(family, monkeypatch):
    traced = []
    original = kernel_attention_module._kernel_part
    monkeypatch.setattr(
        kernel_attention_module,
        "_kernel_part",
        lambda *args: traced.append(args[1].shape) or original(*args),
    )
    graphdef, state = nnx.split(random_model(tiny_config(family), seed=1))
    prompts = [[5, 9, 13], [7, 8, 9, 10, 11, 12, 13, 14, 15], [20, 21, 22, 23, 24]]
    args = dict(max_new_tokens=40, eos_token_id=list(range(1, 11)), num_samples=2)
    args |= dict(key=jax.random.key(3), min_batch_bucket=2)
    plain = generate_ragged(graphdef, state, prompts, **args)
    kernels = generate_ragged(graphdef, state, prompts, decode_kernels=True, **args)
    lengths = np.asarray(plain.lengths)
    assert lengths.min() < 40 and len(set(lengths.tolist())) > 2  # ragged rows, some ended
    np.testing.assert_array_equal(kernels.tokens, plain.tokens)
    np.testing.assert_array_equal(kernels.lengths, plain.lengths)
    np.testing.assert_allclose(kernels.logprobs, plain.logprobs, atol=1e-5, rtol=0)
    # llama: the kernel takes the 16-slot prompt and the 32-slot history window (the last
    # window, 40 slots, splits into no power of two: einsums); gemma3 never reaches it
    assert {shape[1] for shape in traced} == ({16, 32} if family == "llama" else set())


def test_the_kernel_engine_is_a_config_choice(tmp_path):
    graphdef, _ = nnx.split(random_model(tiny_config("llama"), seed=1))
    engine = make_engine("ragged-kernels", EngineContext(graphdef, ParamSplit(), copy=None))
    assert isinstance(engine, RaggedKernelEngine)
    assert engine.sampler.func is generate_ragged
    assert engine.sampler.keywords == {"decode_kernels": True}
    assert TrainConfig(rollout_engine="ragged-kernels", out_dir=str(tmp_path)).rollout_engine
