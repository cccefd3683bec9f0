"""Rollout engines: the one seam between the trainer and whatever samples completions.

An engine answers two calls:

    mu = engine.sync(params, version)                     # behaviour params of `version`
    out = engine.generate(mu, prompts, sampling, key, num_samples=G)   # an `EngineOutput`

``sync`` turns the trained params of the refresh at step ``version`` into the engine's
behaviour params; the trainer keeps what it returns in `llm.rl.state.RunState` (``behaviour``,
``pending``), checkpoints it and hands it back to ``generate``, so an engine holds no run
state of its own and a resumed run is exact. ``generate`` samples G completions of each of the
P prompts (token-id lists), prompt-major (row i continues prompt i // G), and returns them on
the device: tokens, per-token log-probs under the distribution the tokens were drawn from
(temperature / top-p applied: the behaviour log-probs mu), lengths, EOS flags, and the
version of the params that drew them. Each completion may depend only on its key, its row and
its prompt (`llm.rl.keys`), never on the other rows: inside a refresh window mu is frozen, so
an engine may reorder, compact or refill rows freely (DESIGN.md, Rollout engines).

`DenseEngine` is the KV-cache sampler of `llm.sampler` (``rollout_engine: dense``), on the
learner's devices or on ``rollout_devices`` of its own (`llm.rl.rollout_devices`).
`RaggedEngine` (``rollout_engine: ragged``) draws the same completions with `llm.ragged`:
one prompt cache shared by its G rows, attention over the written slots only, and a batch
that shrinks to its live rows; its cost follows the live tokens, not the longest row.
`RaggedKernelEngine` (``rollout_engine: ragged-kernels``) is the ragged engine with its decode
attention on Pallas's GPU decode kernel (`llm.ragged.kernel_attention`). Another
engine plugs in through ``ENGINES`` (a name for the config) or ``init_run(cfg,
engine=factory)``, a factory called with the `EngineContext` of the run.

An inference server (vLLM, sglang-jax) would fit the same two calls, not built here (neither
runs on this machine): ``sync`` pushes the weights of ``version`` to the server (the adapters
alone with LoRA) and returns the params tree itself, so checkpoints still hold mu;
``generate`` sends the prompts as token ids with the sampling settings and ``num_samples``
(vLLM's ``n``), asks for the log-prob of each sampled token under the processed distribution
(vLLM: ``logprobs=0`` with ``--logprobs-mode processed_logprobs``, after temperature and
top-p, which is what the trainer's ratios and drift metrics divide by) and puts the padded
[B, N] arrays on the learner's devices, with the version it was synced to.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax

from llm.ragged import generate_ragged
from llm.rl.rollout_devices import RolloutMesh
from llm.rl.trainable import ParamSplit, merge_params
from llm.sampler import generate_from_state


class EngineOutput(NamedTuple):
    """One rollout's samples on the device; B = P * G rows, prompt-major, N slots."""

    tokens: Any  # int32 [B, N], pad after the end
    logprobs: Any  # float32 [B, N], log mu(y_t) under the sampling distribution, 0 after end
    lengths: Any  # int32 [B], EOS included
    finished: Any  # bool [B], True where the row emitted EOS
    version: int  # the step whose refresh made the params that sampled it


@runtime_checkable
class RolloutEngine(Protocol):
    """What the trainer needs of a sampler (module docstring)."""

    def sync(self, params, version: int) -> Any:
        """The behaviour params of the refresh at step ``version`` made from ``params``."""
        ...

    def generate(
        self,
        behaviour,
        prompts: Sequence[Sequence[int]],
        sampling,
        key: jax.Array,
        *,
        num_samples: int,
        version: int,
    ) -> EngineOutput:
        """G = ``num_samples`` completions per prompt from ``behaviour`` (`EngineOutput`)."""
        ...


@dataclasses.dataclass(frozen=True)
class EngineContext:
    """What a run gives an engine factory: the model graph, which leaves train, the compiled
    copy of the learner's step functions and the sampler's own devices (or None)."""

    graphdef: Any
    split: ParamSplit
    copy: Callable  # trainable params -> a fresh copy on the learner's devices
    rollout: RolloutMesh | None = None


@dataclasses.dataclass(frozen=True)
class DenseEngine:
    """The dense KV-cache sampler (`llm.sampler.generate_from_state`): each prompt prefilled
    once for its G rows, decoding until every row has ended or N tokens are drawn."""

    graphdef: Any
    split: ParamSplit = ParamSplit()
    copy: Callable | None = None  # None: the params themselves (a caller-made copy)
    rollout: RolloutMesh | None = None
    sampler = staticmethod(generate_from_state)  # a class constant, not a field

    @classmethod
    def from_context(cls, ctx: EngineContext) -> DenseEngine:
        return cls(ctx.graphdef, ctx.split, ctx.copy, ctx.rollout)

    def sync(self, params, version: int) -> Any:
        """A copy of ``params`` on the learner's devices, or put onto the rollout mesh; with
        LoRA only the adapters are copied and the frozen base is shared (placed once)."""
        del version  # the copy is the same whatever its version
        trainable, frozen = self.split.split(params)
        if self.rollout is not None:
            return self.rollout.place(trainable)
        if self.copy is None:
            return params
        return merge_params(self.copy(trainable), frozen)

    def generate(self, behaviour, prompts, sampling, key, *, num_samples: int, version: int):
        out = self.sampler(
            self.graphdef,
            behaviour,
            prompts,
            key=key,
            num_samples=num_samples,
            **sampling.generate_kwargs(),
        )
        return EngineOutput(out.tokens, out.logprobs, out.lengths, out.finished, int(version))


@dataclasses.dataclass(frozen=True)
class RaggedEngine(DenseEngine):
    """The dense engine's draws at the cost of the live tokens (`llm.ragged.sampler`): the
    same tokens, lengths and EOS flags, log-probs equal to float rounding (the attention adds
    the prompt and the history in another order)."""

    sampler = staticmethod(generate_ragged)


@dataclasses.dataclass(frozen=True)
class RaggedKernelEngine(DenseEngine):
    """The ragged engine with its decode attention on Pallas's GPU kernel
    (`llm.ragged.kernel_attention`; interpret mode off a GPU, slow): the draws of the ragged
    engine up to float rounding."""

    sampler = staticmethod(functools.partial(generate_ragged, decode_kernels=True))


ENGINES: dict[str, Callable[[EngineContext], RolloutEngine]] = {
    "dense": DenseEngine.from_context,
    "ragged": RaggedEngine.from_context,
    "ragged-kernels": RaggedKernelEngine.from_context,
}


def make_engine(name: str, ctx: EngineContext, factory: Callable | None = None) -> RolloutEngine:
    """The engine ``factory(ctx)`` (a plug-in) or ``ENGINES[name](ctx)``; TypeError unless it
    has the `RolloutEngine` methods."""
    if factory is None:
        if name not in ENGINES:
            raise ValueError(f"rollout_engine must be one of {', '.join(ENGINES)}, got {name!r}")
        factory = ENGINES[name]
    engine = factory(ctx)
    if not isinstance(engine, RolloutEngine):
        raise TypeError(
            f"the engine factory must return an object with sync(params, version) and "
            f"generate(behaviour, prompts, sampling, key, *, num_samples, version); got "
            f"{type(engine).__name__}"
        )
    return engine
