r"""The per-token loss contract of the trainer, its normalisation weights and the registry.

A loss is a hashable callable, in the style of rlax (``adv_t``, ``w_t``),

    loss(logprobs_BxN, behaviour_logprobs_BxN, adv_BxN, w_BxN) -> sum_it w_it l_it

evaluated on one micro-batch of b completions with N = max_new_tokens slots each:

* ``logprobs_BxN``: log pi(y_t) of the sampled tokens under the trained policy, scored
  under the sampler's temperature and top-p (``learner_distribution``; differentiated);
* ``behaviour_logprobs_BxN``: log mu(y_t), the sampler's own log-probs (constants);
* ``adv_BxN``: one advantage per token (constants). The trainer broadcasts each completion's
  advantage over its tokens explicitly (`broadcast_advantages`), never a silent [B] -> [B, N];
* ``w_BxN``: the token weights (constants), 0 off the completion. A loss that needs a
  sequence (a sequence-level ratio) takes the tokens with w_t != 0 as that sequence.

l_it is the loss's per-token term, e.g. AsymRE's -A_it log pi(y_it). The normalisation is
a choice of weights with *global* denominators: B is the number of completions of the whole
step (every micro-batch, every data shard), m the completion mask, n_i = sum_t m_it, and

===================  ====================================================================
``"sequence"``       w_it = m_it / B  (the REINFORCE estimate; AsymRE's choice)
``"token"``          w_it = m_it / sum_jt m_jt  (every completion token counts the same)
``"sequence_mean"``  w_it = m_it / (B max(n_i, 1))  (each sequence's mean; GRPO's)
``"constant"``       w_it = m_it / (B N)  (Dr. GRPO's generation budget, whatever the prompt)
===================  ====================================================================

so :math:`\sum_{it} w_{it} \ell_{it} = \frac{1}{D} \sum_{it} m_{it} \ell_{it}`, the
``asymre_jax.*_loss`` value, and the step's loss and gradient are plain sums over
micro-batches and shards: :math:`L = \sum_k L_k`, :math:`\nabla L = \sum_k \nabla L_k`.
`loss_weights` computes them from the step's whole mask [M, b, N] (the train step calls it
on the global batch, so under sharding its sums are global too). ``rows`` gives B when the
mask holds padding rows (all zero, added so the data axis divides the rows,
`llm.rl.batch.padded_rows`): they weigh nothing and do not count in B.

A named loss is a frozen dataclass (hashable: it keys the compiled step; options that act
on the host only are ``compare=False``) registered with `register_loss`; ``loss: NAME`` in
a config builds ``LOSS_REGISTRY[NAME].from_config(cfg)``. Besides ``__call__`` a `Loss` has

* ``normalization``: a field, the weights above (its default: the loss's own);
* ``advantages(rewards_PxG) -> advantages_PxG``: rewards of P prompts x G samples to
  advantages, jax code the jitted step runs (`traced_advantages`);
* ``traced_options``: the options of ``advantages`` the step receives as traced scalars
  (AsymRE's ``delta_v``: a sweep over it compiles one step); they are ``compare=False``
  fields, the other options key the compiled step;
* ``options``: its small config, {dataclass field: `TrainConfig` field} (`from_config`
  reads them; the config refuses those options under losses that do not read them);
* ``needs_reference``: also called with ``ref_logprobs=`` (log-probs under the frozen
  initial policy, [b, N]), e.g. for a KL penalty;
* ``uses_ratio``: reads pi/mu, so pi must be scored under mu's sampling transform.

A plain function works too (weights ``"sequence"`` unless it has a ``normalization``
attribute, AsymRE's advantages with the config's options unless it has ``advantages``,
`llm.rl.losses.asymre.advantage_source`).

>>> import jax.numpy as jnp
>>> mask = jnp.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
>>> loss_weights(mask, "sequence_mean")
Array([[0.25, 0.25, 0.  ],
       [0.5 , 0.  , 0.  ]], dtype=float32)
>>> loss_weights(mask, "token").sum()
Array(1., dtype=float32)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from asymre_jax import NORMALIZATIONS

LossFn = Callable[..., Any]
LOSS_REGISTRY: dict[str, type] = {}  # name -> Loss class, in registration order


def host(default):
    """A field the jitted loss never reads: left out of equality, hence of the cache key."""
    return dataclasses.field(default=default, compare=False)


def loss_weights(mask, normalization: str, rows: int | None = None) -> jax.Array:
    """Token weights ``w`` of the step's completion mask [..., B, N] (every leading axis,
    micro-batches included, counts as rows): see the module docstring. ``rows``: B, the
    step's real completions, when the mask also holds all-zero padding rows (default: every
    row of the mask)."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}"
        )
    mask = jnp.asarray(mask, jnp.float32)
    if mask.ndim < 2:
        raise ValueError(f"mask must have shape [..., B, N], got shape {tuple(mask.shape)}")
    if rows is None:
        rows = mask.size // mask.shape[-1]
    elif not isinstance(rows, int) or not 1 <= rows <= mask.size // mask.shape[-1]:
        raise ValueError(
            f"rows must be an int in [1, {mask.size // mask.shape[-1]}] (the mask's rows), "
            f"got {rows!r}"
        )
    if normalization == "sequence":
        return mask / rows
    if normalization == "token":
        return mask / jnp.maximum(mask.sum(), 1.0)
    if normalization == "sequence_mean":
        return mask / (rows * jnp.maximum(mask.sum(-1, keepdims=True), 1.0))
    return mask / (rows * mask.shape[-1])  # "constant": B * N


def step_weights(loss_fn: LossFn, mask, rows: int | None = None) -> jax.Array:
    """`loss_weights` of the mask under ``loss_fn``'s normalisation ("sequence" if none)."""
    return loss_weights(mask, getattr(loss_fn, "normalization", "sequence"), rows)


def broadcast_advantages(advantages_B, mask_BxN) -> jax.Array:
    """Each completion's advantage on each of its N slots: [B] -> [B, N] (ValueError unless
    the rows match)."""
    advantages_B, shape = jnp.asarray(advantages_B), jnp.shape(mask_BxN)
    if advantages_B.shape != shape[:-1]:
        raise ValueError(
            f"advantages must have shape {tuple(shape[:-1])} (one per completion of the mask "
            f"{tuple(shape)}), got {tuple(advantages_B.shape)}"
        )
    return jnp.broadcast_to(advantages_B[..., None], shape).astype(jnp.float32)


def check_token_inputs(logprobs_BxN, *constants: tuple[str, Any]) -> list[jax.Array]:
    """[logprobs, *constants] as float arrays, the constants under stop_gradient; ValueError
    naming the argument unless each is [B, N] like ``logprobs_BxN``."""
    logprobs_BxN = jnp.asarray(logprobs_BxN)
    if logprobs_BxN.ndim != 2:
        raise ValueError(f"logprobs_BxN must have shape [B, N], got {tuple(logprobs_BxN.shape)}")
    out = [logprobs_BxN.astype(jnp.promote_types(logprobs_BxN.dtype, jnp.float32))]
    for name, x in constants:
        x = jnp.asarray(x)
        if x.shape != logprobs_BxN.shape:
            raise ValueError(
                f"{name} must have shape [B, N] = {tuple(logprobs_BxN.shape)} like "
                f"logprobs_BxN, got {tuple(x.shape)}"
            )
        out.append(jax.lax.stop_gradient(x.astype(out[0].dtype)))
    return out


def sequence_log_ratio(logprobs_BxN, behaviour_BxN, w_BxN) -> jax.Array:
    """log pi(y)/mu(y) of each whole completion [B, 1]: the tokens with w != 0, pi held
    constant (a ratio that only weights the gradient)."""
    log_ratio = jax.lax.stop_gradient(logprobs_BxN) - behaviour_BxN
    return jnp.where(w_BxN != 0, log_ratio, 0.0).sum(axis=1, keepdims=True)


class Loss:
    """What the trainer and the config read of a named loss besides ``__call__`` (a mixin of
    frozen dataclasses; see the module docstring)."""

    normalization: str = "sequence"  # redeclared as a dataclass field by each loss
    options: ClassVar[Mapping[str, str]] = {}
    needs_reference: ClassVar[bool] = False
    uses_ratio: ClassVar[bool] = True
    traced_options: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"{type(self).__name__}: normalization must be one of "
                f"{', '.join(NORMALIZATIONS)}, got {self.normalization!r}"
            )

    @classmethod
    def from_config(cls, cfg) -> Loss:
        """The loss with the config's options (`options`) and normalisation."""
        missing = [field for field in cls.options.values() if not hasattr(cfg, field)]
        if missing:
            raise ValueError(
                f"{cls.__name__}.options names {', '.join(missing)}, not fields of the config"
            )
        kwargs = {name: getattr(cfg, field) for name, field in cls.options.items()}
        return cls(**kwargs, normalization=cfg.loss_normalization)


def register_loss(name: str, cls: type | None = None):
    """Register the `Loss` class ``cls`` as ``name`` (``loss: name`` in a config); usable as
    a decorator, ``@register_loss("mine")``. Returns ``cls``."""
    if cls is None:
        return lambda c: register_loss(name, c)
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"register_loss: name must be an identifier, got {name!r}")
    params = getattr(cls, "__dataclass_params__", None)
    if not (isinstance(cls, type) and issubclass(cls, Loss) and params and params.frozen):
        raise TypeError(
            f"register_loss: cls must be a frozen dataclass deriving from Loss (hashable: it "
            f"keys the compiled step), got {cls!r}"
        )
    if "normalization" not in {f.name for f in dataclasses.fields(cls)}:
        raise TypeError(
            f"register_loss: {cls.__qualname__} must declare `normalization: str = ...` as a "
            "field (its default weights; the config's normalization sets it)"
        )
    taken = LOSS_REGISTRY.get(name)
    if taken is not None and taken.__qualname__ != cls.__qualname__:
        raise ValueError(f"register_loss: {name!r} is already {taken.__qualname__}")
    LOSS_REGISTRY[name] = cls
    return cls


def loss_class(name: str) -> type:
    """The registered class of ``name``; ValueError naming the registered ones."""
    if name not in LOSS_REGISTRY:
        raise ValueError(f"loss must be one of {', '.join(LOSS_REGISTRY)}; got {name!r}")
    return LOSS_REGISTRY[name]


def loss_from_config(cfg) -> Loss:
    """The registered loss named by ``cfg.loss``, with the config's options."""
    return loss_class(cfg.loss).from_config(cfg)


def default_normalization(name: str) -> str:
    """The normalisation a registered loss uses unless the config sets one."""
    field = next(f for f in dataclasses.fields(loss_class(name)) if f.name == "normalization")
    return field.default


def advantage_options(source) -> dict[str, np.float32]:
    """The traced options of ``source`` (`llm.rl.losses.asymre.advantage_source`) as float32
    host scalars, e.g. ``{"delta_v": -0.1}``: what the step's ``options`` argument carries."""
    names = getattr(source, "traced_options", ())
    return {name: np.float32(getattr(source, name)) for name in names}


def traced_advantages(source, rewards_PxG, options: dict) -> jax.Array:
    """``source.advantages(rewards_PxG)`` with the traced ``options`` in place of its fields
    (under jit: the options are arguments, not constants of the program); float32 [P, G]."""
    names = set(getattr(source, "traced_options", ()))
    if set(options) != names:
        raise ValueError(
            f"options must hold exactly the traced options {sorted(names)} of "
            f"{type(source).__name__}, got {sorted(options)}"
        )
    if options:
        source = dataclasses.replace(source, **options)
    advantages_PxG = jnp.asarray(source.advantages(rewards_PxG), jnp.float32)
    if advantages_PxG.shape != jnp.shape(rewards_PxG):
        raise ValueError(
            f"advantages must have the rewards' shape {tuple(jnp.shape(rewards_PxG))}, "
            f"got {tuple(advantages_PxG.shape)}"
        )
    return advantages_PxG
