r"""Every random key and seed of a training run, derived from ``cfg.seed`` in one place.

With ``base = jax.random.key(cfg.seed)`` (``RunState.key``):

| what                       | derivation                                    | function           |
|----------------------------|-----------------------------------------------|--------------------|
| rollout of step t          | ``fold_in(fold_in(base, t), SAMPLING_SALT)``  | `sampling_key`     |
| evaluation (every step)    | ``fold_in(base, EVAL_SALT)``                  | `evaluation_key`   |
| eval sample j of problem n | ``fold_in(fold_in(eval key, n), j)``          | `sample_keys` *    |
| LoRA A matrices at init    | ``fold_in(base, LORA_INIT_SALT)``             | `lora_init_key`    |
| arithmetic eval problems   | ``seed + EVAL_DATA_SEED_OFFSET`` (a seed)     | `eval_data_seed`   |
| training-data order        | ``IteratorState(seed=cfg.seed)`` (a seed)     | `BatchIterator`    |

\* `llm.rl.evaluation.sample_keys`.

Inside a rollout (``llm.sampler``) row b at decoding step s draws with
``fold_in(fold_in(key, b), s)``; an evaluation sample with its own row key k (above) draws
step s with ``fold_in(k, s)``. So an evaluation's samples depend on the evaluation key and
the problems only, not on how many samples share a sampler call nor on the run's P or G;
the evaluation key is the same at every step of a run and in every run of one seed: every
evaluation of every run of a seed shares common random numbers (float rounding aside, see
`llm.rl.evaluation`). Steps fold in from 0 up, the salts of
``base`` from the top of uint32 down (``EVAL_SALT = 2**32 - 1``, ``LORA_INIT_SALT =
2**32 - 2``), so no two uses share a key (a salt of 7 made LoRA's first draw,
``fold_in(fold_in(base, 7), 0)`` in `flax.nnx.Rngs`, the rollout key of step 7). A loop
written by hand samples step t with ``sampling_key(state.key, state.step)``
(`llm.rl.state.step_key`) and reproduces `llm.trainer.train` bit for bit.
"""

from __future__ import annotations

import jax
import numpy as np

SAMPLING_SALT = 0  # the rollout key of step t, under fold_in(base, t)
EVAL_SALT = 2**32 - 1  # the evaluation key, under base
LORA_INIT_SALT = 2**32 - 2  # the LoRA adapters' initialisation, under base
EVAL_DATA_SEED_OFFSET = 1_000_003  # seed of the generated (arithmetic) evaluation problems

__all__ = [
    "EVAL_DATA_SEED_OFFSET",
    "EVAL_SALT",
    "LORA_INIT_SALT",
    "SAMPLING_SALT",
    "base_key",
    "eval_data_seed",
    "evaluation_key",
    "lora_init_key",
    "sampling_key",
]


def base_key(seed: int) -> jax.Array:
    """The run's base key (``RunState.key``): ``jax.random.key(seed)``."""
    return jax.random.key(seed)


@jax.jit
def _sampling_key(base: jax.Array, step: jax.Array) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(base, step), SAMPLING_SALT)


def sampling_key(base: jax.Array, step: int) -> jax.Array:
    """The key of step ``step``'s rollout (one jitted dispatch; ``step`` is traced, so no
    recompilation per step)."""
    if int(step) < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return _sampling_key(base, np.uint32(step))


def evaluation_key(base: jax.Array) -> jax.Array:
    """The evaluation key: the same at every step of a run and across runs of one seed."""
    return jax.random.fold_in(base, np.uint32(EVAL_SALT))


def lora_init_key(seed: int) -> jax.Array:
    """The key of the LoRA adapters' initial A matrices (B starts at 0)."""
    return jax.random.fold_in(base_key(seed), LORA_INIT_SALT)


def eval_data_seed(seed: int) -> int:
    """Seed of the generated evaluation problems (disjoint stream from the training ones)."""
    return int(seed) + EVAL_DATA_SEED_OFFSET
