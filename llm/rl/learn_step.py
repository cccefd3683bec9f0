r"""The device path of one update: the learner's batch built from the engine's arrays, and the
advantages computed inside the jitted step.

A rollout engine leaves its samples on the device (`llm.rl.engine.EngineOutput`). Only the
tokens, lengths and EOS flags go to the host (to detokenise and reward them) and only the
rewards [P, G] come back, with the step's prompt block and its scalars, in one transfer:

    batch = assemble_batch(prompt_tokens, prompt_mask, tokens_BxW, logprobs_BxW, lengths_B,
                           layout=layout)                        # jitted, on the device
    params, opt_state, metrics = learn_step(params, opt_state, batch, rewards_PxG, hyper,
                                            options, frozen, step=train_step, source=loss)

`assemble_batch` is `llm.rl.batch.build_batch` on the device: the same [M, b', ...] arrays
(the completions cut to the N' live slots, the loss-side arrays on all N slots, the padding
rows that keep the data axis dividing the rows), bit for bit. `learn_step` turns the rewards
into advantages with the loss's own ``advantages`` (`llm.rl.losses.traced_advantages`), its
``traced_options`` (AsymRE's ``delta_v``) arguments of the program rather than constants, so
a sweep over delta_v runs one compiled step:

.. math::  A_{pg} = r_{pg} - (\bar r_p + \delta_V), \qquad
           a_{k,j} = A_{(kb + j)}\ (j < b), \quad a_{k,j} = 0\ (b \le j < b').

The layout (micro-batches, rows per stored prompt, padded rows, live slots) is static: it is
what `row_layout` reads off the host's lengths, and each distinct one compiles once.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from llm.rl.batch import Batch, completion_width, padded_rows, prompts_per_micro_batch
from llm.rl.losses import traced_advantages


class RowLayout(NamedTuple):
    """The static shape of a step's `Batch` (hashable: a jit static argument)."""

    micro_batches: int  # M
    group: int  # g: completion rows that share one stored prompt row
    rows: int  # b': rows of a micro-batch, padding rows included
    width: int  # N': the completion slots the model reads
    slots: int  # N: max_new_tokens, the loss-side arrays' width
    pad_token_id: int


def row_layout(
    lengths_B,
    *,
    micro_batches: int,
    group_size: int,
    max_new_tokens: int,
    row_multiple: int = 1,
    pad_token_id: int = 0,
    trim: bool = True,
) -> RowLayout:
    """The `RowLayout` of B = len(lengths_B) completions: the one `build_batch` makes."""
    B = len(lengths_B)
    if micro_batches < 1 or B % micro_batches:
        raise ValueError(f"micro_batches={micro_batches} must be >= 1 and divide B = {B}")
    rows = B // micro_batches
    longest = int(max(lengths_B, default=0))
    width = completion_width(longest, max_new_tokens) if trim else int(max_new_tokens)
    return RowLayout(
        micro_batches=int(micro_batches),
        group=prompts_per_micro_batch(rows, group_size)[1],
        rows=padded_rows(rows, group_size, row_multiple),
        width=width,
        slots=int(max_new_tokens),
        pad_token_id=int(pad_token_id),
    )


def _widen(x_BxW, width: int, fill):
    """``x_BxW`` cut or right-padded with ``fill`` to ``width`` columns."""
    W = x_BxW.shape[1]
    if W >= width:
        return x_BxW[:, :width]
    return jnp.pad(x_BxW, ((0, 0), (0, width - W)), constant_values=fill)


def _micro_rows(x, layout: RowLayout, keep: bool):
    """[B, ...] -> [M, b', ...]: M micro-batches, each padded with copies of its first g rows
    (``keep``) or zeros."""
    M, g = layout.micro_batches, layout.group
    x = x.reshape(M, x.shape[0] // M, *x.shape[1:])
    copies = (layout.rows - x.shape[1]) // g
    if copies == 0:
        return x
    head = x[:, :g] if keep else jnp.zeros_like(x[:, :g])
    return jnp.concatenate([x, jnp.tile(head, (1, copies) + (1,) * (x.ndim - 2))], axis=1)


def assemble_batch(
    prompt_tokens, prompt_mask, tokens_BxW, logprobs_BxW, lengths_B, *, layout: RowLayout
) -> Batch:
    """The step's `Batch` from the engine's device arrays and the prompt block
    (`llm.rl.batch.prompt_rows`, [M, p', L]); its advantages are zeros until `learn_step`
    fills them in."""
    B, W = tokens_BxW.shape
    if logprobs_BxW.shape != (B, W) or lengths_B.shape != (B,):
        raise ValueError(
            f"logprobs_BxW {logprobs_BxW.shape} and lengths_B {lengths_B.shape} must match "
            f"tokens_BxW {(B, W)}"
        )
    if W > layout.slots:
        raise ValueError(f"the engine's {W} slots exceed max_new_tokens = {layout.slots}")
    N = layout.slots
    mask_BxN = (jnp.arange(N)[None, :] < lengths_B[:, None]).astype(jnp.float32)
    completions = _widen(tokens_BxW.astype(jnp.int32), layout.width, layout.pad_token_id)
    behaviour_BxN = _widen(logprobs_BxW.astype(jnp.float32), N, 0.0) * mask_BxN
    rows = lambda x, keep: _micro_rows(x, layout, keep)  # noqa: E731
    return Batch(
        prompt_tokens=prompt_tokens,
        prompt_mask=prompt_mask,
        completions=rows(completions, True),
        loss_mask=rows(mask_BxN, False),
        advantages=rows(jnp.zeros((B,), jnp.float32), False),
        behaviour_logprobs=rows(behaviour_BxN, False),
        ref_logprobs=rows(jnp.zeros((B, N), jnp.float32), False),
    )


def advantage_rows(advantages_PxG, shape: tuple[int, int]) -> jax.Array:
    """The [P, G] advantages as the batch's [M, b'] rows: prompt-major, padding rows 0."""
    M, rows = shape
    B = advantages_PxG.size
    if B % M or rows < B // M:
        raise ValueError(
            f"{B} advantages do not fill {M} micro-batches of at most {rows} rows (shape {shape})"
        )
    a_MxB = advantages_PxG.reshape(M, B // M)
    return jnp.pad(a_MxB, ((0, 0), (0, rows - B // M)))


def learn_step(
    params, opt_state, batch: Batch, rewards_PxG, hyper, options, frozen, *, step, source
):
    """``step`` (`llm.rl.train_step.train_step`, bound to its model and loss) on ``batch``
    with the advantages of ``rewards_PxG`` under ``source`` (`llm.rl.losses.advantage_source`)
    and its traced ``options``; the metrics also hold those ``advantages`` [P, G]."""
    advantages_PxG = traced_advantages(source, rewards_PxG, options)
    batch = batch._replace(advantages=advantage_rows(advantages_PxG, batch.advantages.shape))
    params, opt_state, metrics = step(params, opt_state, batch, hyper, frozen)
    return params, opt_state, metrics | {"advantages": advantages_PxG}
