"""The off-policy RL trainer as pieces; ``llm.trainer.train`` is a short loop over them.

    setup, state = init_run(cfg)                   # model, mesh, compiled step, RunState
    state = refresh_behaviour(setup, state)        # mu <- pi
    ro = rollout(setup.graphdef, state.behaviour, examples, setup.renderer, setup.reward_fn,
                 num_samples=G, sampling=setup.sampling, key=step_key(state))
    state, metrics = update(setup, state, ro, learning_rate=lr)
    scores = evaluate(setup.graphdef, state.params, held_out, setup.renderer,
                      setup.reward_fn, key=eval_key(state), sampling=setup.sampling)

Modules: ``config`` (TrainConfig; each field declared once in ``config_fields``' `option`,
checked by ``config_checks``, tabled for the docs by ``config_reference``), ``keys`` (every
random key and seed of a run), ``schedule`` (the learning rate of step t), ``tasks`` (the
configured examples), ``state`` (Setup, RunState), ``engine`` (the rollout engine protocol
and the dense sampler behind it), ``rollouts`` (sample and score), ``batch`` (the learner's
Batch), ``transfer`` (host <-> device), ``losses`` (the per-token loss contract and its
registry; AsymRE, GRPO, ISReinforce, CISPO, TOPR), ``logprobs`` (teacher forcing),
``train_step`` (the jitted step), ``step`` (one RL step), ``evaluation``, ``checkpoint``,
``metrics``, ``loop`` (train), ``trainable`` (ParamSplit: all weights, or LoRA's adapters
alone, train). No name exported here is also a submodule's (the function ``rollout`` lives
in ``rollouts``), so ``import llm.rl.<module>`` and ``llm.rl.<name>`` never shadow each
other.
"""

from llm.rl.checkpoint import Checkpointer, restore_state, save_state
from llm.rl.config import TrainConfig
from llm.rl.evaluation import evaluate
from llm.rl.losses import CISPO, GRPO, TOPR, AsymRE, ISReinforce, loss_from_config, register_loss
from llm.rl.metrics import MetricsWriter
from llm.rl.optimizer import hyperparams, make_optimizer
from llm.rl.rollouts import Rollout, Sampling, rollout
from llm.rl.state import (
    RunState,
    Setup,
    eval_key,
    init_run,
    init_state,
    make_setup,
    refresh_behaviour,
    step_key,
)
from llm.rl.step import PendingMetrics, dispatch_update, rl_step, update
from llm.rl.trainable import ParamSplit, merge_params

__all__ = [
    "CISPO",
    "GRPO",
    "TOPR",
    "AsymRE",
    "Checkpointer",
    "ISReinforce",
    "MetricsWriter",
    "ParamSplit",
    "PendingMetrics",
    "Rollout",
    "RunState",
    "Sampling",
    "Setup",
    "TrainConfig",
    "dispatch_update",
    "eval_key",
    "evaluate",
    "hyperparams",
    "init_run",
    "init_state",
    "loss_from_config",
    "make_optimizer",
    "make_setup",
    "merge_params",
    "refresh_behaviour",
    "register_loss",
    "restore_state",
    "rl_step",
    "rollout",
    "save_state",
    "step_key",
    "update",
]
