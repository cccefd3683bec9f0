"""The trainer's two halves: a static `Setup` (model graph, mesh, compiled step functions,
tokenizer, loss, reward, sampling) and a `RunState` of arrays and counters that one update
maps to the next.

    setup, state = init_run(cfg)                       # or init_run(cfg, model, tokenizer)
    state = refresh_behaviour(setup, state)            # mu <- pi (every refresh_every steps)
    ro = rollout(setup.graphdef, state.behaviour, examples, setup.renderer, setup.reward_fn,
                 num_samples=G, sampling=setup.sampling, key=step_key(state))
    state, metrics = update(setup, state, ro, learning_rate=1e-5)

`RunState` holds the trained params, the optimizer state, the behaviour params (a frozen copy
that lags by up to ``refresh_every`` steps; after the step's refresh it samples step
``step``), the reference params of a KL term (or None), the step, the data position
(`IteratorState`), the base RNG key and, with
``max_staleness`` k > 0, the ``pending`` behaviour params: copies made at refresh steps that
sample only k steps later (`llm.rl.step.behaviour_version`); everything a checkpoint saves.

LoRA (``cfg.lora_rank > 0``, `llm.models.lora`): adapters are attached to the loaded model
and only they are trained (``setup.split``, `llm.rl.trainable.ParamSplit`). ``params``,
``behaviour`` and ``reference`` stay full pure dicts of the model, but they share one set of
base arrays: mu is the frozen base plus a stale copy of the adapters, and refreshing it (or
making the reference, base + the initial adapters) copies the adapters alone. The optimizer
state holds adapter-shaped moments only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
from flax import nnx

from llm.data import rewards as rewards_lib
from llm.data.datasets import IteratorState
from llm.data.prompts import PromptRenderer
from llm.data.tokenizer import load_tokenizer
from llm.errors import ConfigError
from llm.models.hf_io import load_hf
from llm.models.lora import LoRASpec, add_lora, has_lora
from llm.models.sharding import param_shardings
from llm.models.stacked import stack_blocks
from llm.models.transformer import set_runtime_options
from llm.rl import keys
from llm.rl.checkpoint import abstract_like
from llm.rl.config import TrainConfig
from llm.rl.engine import EngineContext, RolloutEngine, make_engine
from llm.rl.logprobs import scoring_of
from llm.rl.losses import LossFn, advantage_source, loss_from_config
from llm.rl.optimizer import OptSpec
from llm.rl.rollout_devices import RolloutMesh, make_meshes, rollout_mesh
from llm.rl.rollouts import Sampling
from llm.rl.train_step import StepFunctions, row_specs, step_functions
from llm.rl.trainable import ParamSplit, merge_params


class RunState(NamedTuple):
    """Arrays and counters of a run (params are pure dicts of arrays, sharded on the mesh)."""

    params: Any
    opt_state: Any
    behaviour: Any
    reference: Any  # frozen initial params when the loss needs a reference, else None
    step: int  # updates done
    data: IteratorState  # where the training-data iterator stands
    key: jax.Array  # base key of cfg.seed; every other key derives from it (llm.rl.keys)
    # (version, mu) of refreshes made but not sampling yet (max_staleness k > 0): oldest first
    pending: tuple[tuple[int, Any], ...] = ()


@dataclasses.dataclass(frozen=True)
class Setup:
    """What stays fixed during a run."""

    cfg: TrainConfig
    graphdef: Any
    model_config: Any
    tokenizer: Any
    renderer: PromptRenderer
    mesh: Any
    shardings: Any  # pure dict of NamedSharding like the params
    fns: StepFunctions
    loss_fn: LossFn
    advantages: Callable  # rewards [P, G] -> advantages [P, G] (what the step computes)
    reward_fn: Callable
    sampling: Sampling
    split: ParamSplit = ParamSplit()  # which leaves train (LoRA: the adapters only)
    rollout: RolloutMesh | None = None  # the sampler's own devices (cfg.rollout_devices > 0)
    engine: RolloutEngine | None = None  # what samples (llm.rl.engine; make_setup sets it)
    # whose advantages the jitted step takes, and their traced options (llm.rl.learn_step)
    advantage_source: Any = None


def builtin_reward(cfg: TrainConfig) -> rewards_lib.VerifiableReward:
    """The task's reward on the config's scale; it says what is correct (``is_correct``)."""
    return rewards_lib.verifiable_reward(cfg.reward_name, scale=cfg.reward_scale)


def lora_spec(cfg: TrainConfig) -> LoRASpec | None:
    """The config's adapters (alpha None: 2 * rank), or None for full fine-tuning."""
    if not cfg.lora_rank:
        return None
    alpha = cfg.lora_alpha if cfg.lora_alpha is not None else 2.0 * cfg.lora_rank
    targets = tuple(t.strip() for t in cfg.lora_targets.split(",") if t.strip())
    return LoRASpec(rank=cfg.lora_rank, alpha=alpha, targets=targets)


def _with_lora(cfg: TrainConfig, model: nnx.Module) -> nnx.Module:
    """``model`` with the config's adapters attached (A from `keys.lora_init_key`; B = 0)."""
    spec = lora_spec(cfg)
    if spec is not None:
        if has_lora(model):
            raise ValueError(
                "model already has LoRA adapters; pass it with lora_rank=0 to train them"
            )
        add_lora(model, spec, rngs=nnx.Rngs(params=keys.lora_init_key(cfg.seed)))
    return model


def _step_functions(cfg: TrainConfig, graphdef, params, mesh, shardings, split, loss_fn, source):
    """The compiled step functions of the config's shapes (cached across runs)."""
    trainable_sh, frozen_sh = split.split(shardings)
    rows_spec, prompts_spec, num_rows = row_specs(
        mesh, cfg.batch_size, cfg.micro_batches, cfg.samples_per_prompt
    )
    return step_functions(
        graphdef,
        abstract_like(split.trainable(params), trainable_sh),
        mesh,
        trainable_sh,
        loss_fn,
        OptSpec(cfg.adam_b1, cfg.adam_b2, cfg.adam_eps),
        rows_spec,
        cfg.logits_chunk_size,
        frozen_sh,
        prompts_spec,
        scoring_of(cfg),
        num_rows,
        source,
    )


def _check_position_limit(cfg: TrainConfig, model_config) -> None:
    """ConfigError unless a prompt of one token plus the longest completion fits the model's
    ``max_position_embeddings`` (the sampler checks the real prompts)."""
    limit = model_config.max_position_embeddings
    for name in ("max_new_tokens", "eval_max_new_tokens"):
        new = getattr(cfg, name) or 0
        if limit is not None and new + 1 > limit:
            raise ConfigError(
                name,
                f"must leave room for a prompt within the model's max_position_embeddings "
                f"({limit}): at most {limit - 1}, got {new}",
            )


def _prepared(cfg: TrainConfig, model: nnx.Module) -> nnx.Module:
    """``model`` with the run's adapters and runtime options; with ``scan_layers`` a new
    graph on the same arrays with the layers stored stacked (params, gradients and moments
    [groups, ...]: one leaf per weight, `llm.models.stacked`)."""
    model = _with_lora(cfg, model)
    set_runtime_options(model, remat=cfg.remat, scan_layers=cfg.scan_layers)
    return stack_blocks(nnx.clone(model)) if cfg.scan_layers else model


def make_setup(
    cfg: TrainConfig,
    model: nnx.Module | None = None,
    tokenizer=None,
    *,
    loss_fn: LossFn | None = None,
    reward_fn: Callable | None = None,
    engine: Callable[[EngineContext], RolloutEngine] | None = None,
) -> tuple[Setup, Any]:
    """(setup, params): the model from ``cfg.model_path`` (or ``model``, resharded onto the
    mesh), its tokenizer, the compiled step functions of ``loss_fn`` (default: the config's).
    With ``cfg.lora_rank > 0`` adapters are attached and only they train; a ``model`` that
    already has adapters (and ``lora_rank=0``) trains its adapters alone too."""
    mesh, sampler_mesh = make_meshes(cfg)
    if model is None:
        model, model_config = load_hf(
            cfg.model_path, dtype=cfg.dtype, mesh=mesh, compute_dtype=cfg.compute_dtype
        )
    else:
        model_config = model.config
    _check_position_limit(cfg, model_config)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg.model_path)
    model = _prepared(cfg, model)
    split = ParamSplit.of_model(model)
    graphdef, state = nnx.split(model)
    shardings_of = lambda m: nnx.to_pure_dict(param_shardings(model, m))  # noqa: E731
    shardings = shardings_of(mesh)
    params = jax.device_put(nnx.to_pure_dict(state), shardings)
    rollout = rollout_mesh(sampler_mesh, shardings_of, split, params)
    loss_fn = loss_fn if loss_fn is not None else loss_from_config(cfg)
    source = advantage_source(loss_fn, cfg)  # whose advantages the step computes
    fns = _step_functions(cfg, graphdef, params, mesh, shardings, split, loss_fn, source)
    chat = cfg.chat if cfg.chat is not None else (False if cfg.task == "arithmetic" else None)
    renderer = PromptRenderer(
        tokenizer, chat=chat, system_prompt=cfg.system_prompt, instruction=cfg.instruction
    )
    eos = sorted(set(model_config.eos_token_id) | {tokenizer.eos_token_id} - {None})
    pad = model_config.pad_token_id if model_config.pad_token_id is not None else 0
    setup = Setup(
        cfg=cfg,
        graphdef=graphdef,
        model_config=model_config,
        tokenizer=tokenizer,
        renderer=renderer,
        mesh=mesh,
        shardings=shardings,
        fns=fns,
        loss_fn=loss_fn,
        advantages=source.advantages,
        advantage_source=source,
        reward_fn=reward_fn if reward_fn is not None else builtin_reward(cfg),
        sampling=Sampling(cfg.max_new_tokens, cfg.temperature, cfg.top_p, eos, pad),
        split=split,
        rollout=rollout,
        engine=make_engine(
            cfg.rollout_engine, EngineContext(graphdef, split, fns.copy, rollout), engine
        ),
    )
    return setup, params


def init_state(setup: Setup, params, *, data: IteratorState | None = None) -> RunState:
    """Step 0: fresh optimizer state (of the trainable params), behaviour = a copy of the
    params (of the adapters alone with LoRA), key of ``cfg.seed``."""
    fns = setup.fns
    trainable, frozen = setup.split.split(params)
    needs_reference = getattr(setup.loss_fn, "needs_reference", False)
    reference = merge_params(fns.copy(trainable), frozen) if needs_reference else None
    return RunState(
        params=params,
        opt_state=fns.init_opt(trainable),
        behaviour=behaviour_copy(setup, params, version=0),
        reference=reference,
        step=0,
        data=data if data is not None else IteratorState(seed=setup.cfg.seed),
        key=keys.base_key(setup.cfg.seed),
    )


def init_run(cfg: TrainConfig, model=None, tokenizer=None, **plugins) -> tuple[Setup, RunState]:
    """`make_setup` then `init_state`: everything step 0 needs. ``plugins``: loss_fn,
    reward_fn, engine (a factory of `llm.rl.engine.EngineContext` -> `RolloutEngine`)."""
    cfg.validate()
    setup, params = make_setup(cfg, model, tokenizer, **plugins)
    return setup, init_state(setup, params)


def behaviour_copy(setup: Setup, params, *, version: int):
    """Behaviour params of the refresh at step ``version`` from ``params``: the engine's
    ``sync`` (the dense engine: a copy on the learner's mesh, or put onto the rollout mesh,
    ``setup.rollout``; with LoRA only the adapters are copied, the frozen base is shared on
    the learner's mesh or placed there once, `llm.rl.rollout_devices`)."""
    return setup.engine.sync(params, version)


def refresh_behaviour(setup: Setup, state: RunState) -> RunState:
    """The behaviour params become a copy of the trained params (`behaviour_copy`)."""
    return state._replace(behaviour=behaviour_copy(setup, state.params, version=state.step))


def step_key(state: RunState) -> jax.Array:
    """The key ``train()`` samples the state's step with (`llm.rl.keys.sampling_key`)."""
    return keys.sampling_key(state.key, state.step)


def eval_key(state: RunState) -> jax.Array:
    """The evaluation key (`llm.rl.keys.evaluation_key`): the same at every step of a run and
    across runs of one seed (common random numbers)."""
    return keys.evaluation_key(state.key)
