"""The update with bfloat16 params (a bf16 model, bf16 LoRA adapters) and gradient clipping.

Regression: optax's ``clip_by_global_norm`` rescales a leaf as ``t / norm * max_norm`` with
the float32 ``max_norm`` that ``inject_hyperparams`` traces, which promotes a bfloat16 leaf
to float32, and ``lax.select`` then refuses the mixed pair (TypeError). The trainer's
optimizer must clip bfloat16 (and mixed bfloat16 / float32) gradients, keep each leaf's
dtype, and clip to the same norm as in float32.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from llm.models.tiny import make_tiny_checkpoint
from llm.rl.optimizer import (
    clip_by_global_norm_f32,
    hyperparams,
    make_optimizer,
    optimizer_moments,
)
from llm.trainer import TrainConfig, train


def _update(params, grads, max_grad_norm):
    tx = make_optimizer()
    state = tx.init(params)
    state.inner_state.hyperparams.update(hyperparams(1e-2, 0.0, max_grad_norm))
    updates, _ = jax.jit(tx.update)(grads, state, params)
    return updates, optax.apply_updates(params, updates)


BF16, F32 = jnp.bfloat16, jnp.float32


@pytest.mark.parametrize("max_grad_norm", [0.5, 0.0])  # 0: no clipping (norm inf)
@pytest.mark.parametrize(
    "dtypes",
    [{"w": BF16, "lora_a": BF16, "b": F32}, {"w": BF16, "lora_a": BF16, "b": BF16}],
    ids=["mixed", "all-bf16"],
)
def test_adamw_step_on_bf16_params_keeps_dtypes_and_matches_f32(max_grad_norm, dtypes):
    """All-bf16 params also guard the hyperparams' dtype: inject_hyperparams would store b2 =
    0.999 in bfloat16 (= 1.0), and Adam's bias correction 1 - b2^t = 0 gives NaN."""
    rng = np.random.default_rng(0)
    raw = {k: rng.normal(size=s) for k, s in (("w", (4, 8)), ("lora_a", (8, 2)), ("b", (3,)))}
    params = {k: jnp.asarray(v, dtypes[k]) for k, v in raw.items()}
    grads = {k: jnp.asarray(10 * v, dtypes[k]) for k, v in raw.items()}  # norm >> 0.5
    updates, new_params = _update(params, grads, max_grad_norm)
    assert {k: v.dtype for k, v in new_params.items()} == dtypes
    # the same step in float32 from the same (bf16-rounded) values
    f32 = {k: v.astype(F32) for k, v in params.items()}
    ref, _ = _update(f32, {k: v.astype(F32) for k, v in grads.items()}, max_grad_norm)
    for k in raw:
        np.testing.assert_allclose(
            np.asarray(updates[k], np.float32), np.asarray(ref[k]), rtol=2e-2, atol=1e-4
        )


@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_float32_clipping_is_bit_identical_to_optax(max_norm):
    """float32 runs keep their numbers: the same bits as optax.clip_by_global_norm."""
    keys = jax.random.split(jax.random.key(0), 3)
    grads = {f"w{i}": jax.random.normal(k, (17, 5)) * (i + 1) for i, k in enumerate(keys)}
    ours, _ = clip_by_global_norm_f32(max_norm).update(grads, optax.EmptyState())
    theirs, _ = optax.clip_by_global_norm(max_norm).update(grads, optax.EmptyState())
    for name in grads:
        np.testing.assert_array_equal(np.asarray(ours[name]), np.asarray(theirs[name]))


def test_clipping_bf16_scales_to_max_norm():
    """The clip itself (first element of the chain): the global norm becomes max_grad_norm,
    computed in float32 (a bf16 sum of squares would lose digits)."""
    g = {"a": jnp.full((64, 64), 3.0, jnp.bfloat16), "b": jnp.full((7,), -2.0, jnp.float32)}
    clipped, _ = clip_by_global_norm_f32(jnp.float32(2.0)).update(g, optax.EmptyState())
    assert clipped["a"].dtype == jnp.bfloat16 and clipped["b"].dtype == jnp.float32
    norm = float(optax.tree.norm(jax.tree.map(lambda x: x.astype(jnp.float32), clipped)))
    assert norm == pytest.approx(2.0, rel=1e-2)


# slow (CI): a bfloat16 trainer compiles slowly on the CPU (10-30 s); the fast lane checks the
# optimizer on bfloat16 leaves above, without the trainer
@pytest.mark.slow
@pytest.mark.parametrize("lora_rank", [0, 2])
def test_trainer_step_with_bf16_params_and_clipping(tmp_path, lora_rank):
    model_path = str(make_tiny_checkpoint(tmp_path / "m", "qwen2", "tiny", num_hidden_layers=1))
    cfg = TrainConfig(
        model_path=model_path,
        dtype="bfloat16",
        lora_rank=lora_rank,
        task_kwargs={"num_examples": 16},
        num_steps=1,
        prompts_per_step=2,
        samples_per_prompt=2,
        max_new_tokens=3,
        max_grad_norm=1e-3,  # always clips
        learning_rate=1e-2,
        eval_prompts=0,
        out_dir=str(tmp_path / "run"),
        progress=False,
        tensorboard=False,
    )
    rows, state = train(cfg, return_state=True)
    assert len(rows) == 1 and rows[0]["finite"]
    leaves = jax.tree.leaves(state.params)
    assert {x.dtype for x in leaves} == {jnp.dtype(jnp.bfloat16)}
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)  # b2 not rounded to 1
    moments = jax.tree.leaves(optimizer_moments(state.opt_state))
    assert {x.dtype for x in moments if x.ndim} == {jnp.dtype(jnp.bfloat16)}  # follow params
