"""The trainer's run configuration: one flat, JSON-serialisable dataclass.

`TrainConfig` holds every option of `llm.rl.loop.train` and of `python -m llm.train` (one
flag per field). It is read from a JSON or YAML file (`TrainConfig.from_file`), updated
with `key=value` overrides (`with_overrides`), checked once (`validate`, called by `train`)
and stored in every checkpoint (`to_dict`): a resumed run refuses a different run's config.

Each field is declared once, with `llm.rl.config_fields.option`: default, help, group, and
the range or choices it accepts. The command line, `validate` and the reference table of
the docs (`python -m llm.rl.config_reference`, docs/reference/config.md) all read that
declaration. Choices owned by other modules (losses, rewards, dtypes, ...) come from them.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from collections.abc import Mapping
from typing import Any

from asymre_jax import NORMALIZATIONS
from asymre_jax.advantages import SCALES
from asymre_jax.comparators import IS_LEVELS
from llm.data.rewards import REWARD_FNS, REWARD_SCALES
from llm.errors import ConfigError
from llm.models.config import DTYPES, REMAT_MODES
from llm.models.lora import LORA_TARGETS
from llm.rl.config_checks import coerce, read_mapping, unknown_message, validate_config
from llm.rl.config_fields import (
    AT_LEAST_ONE,
    FINITE,
    GROUPS,
    NONNEGATIVE,
    POSITIVE,
    RESUME_MUTABLE,
    UNIT_INTERVAL,
    Range,
    option,
    option_of,
)
from llm.rl.engine import ENGINES
from llm.rl.logprobs import LEARNER_DISTRIBUTIONS
from llm.rl.losses import LOSS_REGISTRY, LOSSES, default_normalization

__all__ = [
    "GROUPS",
    "HELP",
    "IS_LEVELS",
    "LOSSES",
    "RESUME_MUTABLE",
    "REWARD_SCALES",
    "SCHEDULES",
    "TASKS",
    "ConfigError",
    "TrainConfig",
]

TASKS = ("arithmetic", "gsm8k", "math500", "table", "jsonl")
SCHEDULES = ("constant", "cosine")
DTYPE_NAMES = tuple(DTYPES)
AT_LEAST_ZERO = NONNEGATIVE  # for an int field: "an integer >= 0"


def _group(name: str):
    """`option` for the fields of the group ``name`` (a key of GROUPS)."""
    if name not in GROUPS:
        raise ValueError(f"unknown option group {name!r}; expected one of {', '.join(GROUPS)}")
    return functools.partial(option, group=name)


_model, _data, _reward, _loss, _rollout = map(_group, list(GROUPS)[:5])
_optimizer, _devices, _evaluation, _run = map(_group, list(GROUPS)[5:])


@dataclasses.dataclass
class TrainConfig:
    """Every option of the off-policy trainer (see `python -m llm.train --help`)."""

    model_path: str = _model(
        "", "Hugging Face folder (config.json, *.safetensors, tokenizer) to fine-tune."
    )
    dtype: str = _model(
        "float32", "parameter dtype (optimizer moments follow it).", choices=DTYPE_NAMES
    )
    compute_dtype: str | None = _model(None, "matmul dtype (None: dtype).", choices=DTYPE_NAMES)
    lora_rank: int = _model(
        0,
        "LoRA rank r: train low-rank adapters on the frozen model (0 = full fine-tuning). The "
        "behaviour policy is the base plus a stale copy of the adapters.",
        range=AT_LEAST_ZERO,
    )
    lora_alpha: float | None = _model(
        None,
        "LoRA scale numerator: the update is (alpha / r) x A B.",
        range=Range(low=0, low_open=True, note="2 * lora_rank"),
    )
    lora_targets: str = _model(
        "q,k,v,o,gate,up,down",
        "comma-separated projections that get adapters: q,k,v,o (attention), gate,up,down (MLP).",
        choices=LORA_TARGETS,
        separator=",",
    )
    task: str = _data(
        "arithmetic",
        "arithmetic (synthetic, no data), gsm8k, math500, or table (any columns; alias jsonl).",
        choices=TASKS,
    )
    data_path: str | None = _data(
        None,
        "training data: a jsonl file, a folder of {split}.jsonl, a parquet file or folder, or "
        "a Hugging Face dataset saved with save_to_disk.",
    )
    eval_data_path: str | None = _data(
        None, "held-out data, same formats (None: data_path with split eval_split)."
    )
    train_split: str = _data("train", "split name when data_path is a folder.")
    eval_split: str = _data("test", "split name when the eval path is a folder.")
    prompt_field: str | None = _data(
        None,
        "column holding the question (None: the task's: prompt, question for gsm8k, problem "
        "for math500).",
    )
    answer_field: str | None = _data(
        None, "column holding the reference answer (None: the task's, answer)."
    )
    task_kwargs: dict[str, Any] = _data(
        {},
        "JSON dict for the task: arithmetic knobs (num_examples, digits, num_operands, "
        "operators), limit.",
    )
    reward: str | None = _reward(
        None,
        "reward function name (None: from the task; jsonl uses 'math').",
        choices=tuple(REWARD_FNS),
    )
    reward_scale: str = _reward("pm1", "pm1: +1/-1 (the paper's); 01: 1/0.", choices=REWARD_SCALES)
    chat: bool | None = _reward(
        None,
        "render prompts with the chat template (None: yes when the tokenizer has one, no for "
        "arithmetic).",
    )
    system_prompt: str | None = _reward(None, "optional system message for chat prompts.")
    instruction: str | None = _reward(
        None, "text appended to each question in chat prompts ('' for none)."
    )
    loss: str = _loss(
        "asymre",
        "asymre, grpo (PPO-clipped ratio), is_reinforce (truncated IS weights), cispo (capped "
        "token IS weight, MiniMax-M1) or topr (IS weight on negatives only, tapered).",
        choices=LOSSES,
    )
    delta_v: float = _loss(
        -0.1,
        "AsymRE / IS-REINFORCE / TOPR baseline shift: V = mean of the G rewards of a prompt + "
        "delta_v.",
        range=FINITE,
    )
    normalization: str | None = _loss(
        None,
        "loss normalisation (None: the loss's own: sequence_mean for grpo, token for cispo, "
        "else sequence).",
        choices=NORMALIZATIONS,
    )
    grpo_epsilon: float = _loss(
        0.2, "GRPO clip range epsilon (lower side, and upper side unless set).", range=NONNEGATIVE
    )
    grpo_epsilon_high: float | None = _loss(
        None,
        "GRPO upper clip epsilon (DAPO's clip-higher).",
        range=Range(low=0, note="grpo_epsilon"),
    )
    kl_beta: float = _loss(
        0.0,
        "GRPO k3 KL coefficient against the frozen initial policy (0 = off; > 0 keeps a "
        "reference copy of the params).",
        range=NONNEGATIVE,
    )
    leave_one_out: bool = _loss(
        False,
        "AsymRE / IS-REINFORCE / TOPR: baseline from the other G - 1 rewards of the prompt (RLOO) "
        "instead of all G.",
    )
    advantage_scale: str = _loss(
        "none",
        "AsymRE / IS-REINFORCE / TOPR advantage scale: none, or group_std (divide by the "
        "group's std).",
        choices=SCALES,
    )
    is_truncation: float = _loss(
        1.0,
        "IS-REINFORCE weight truncation c.",
        range=Range(low=0, low_open=True, finite=False, note="inf: no truncation"),
    )
    is_level: str = _loss(
        "sequence",
        "IS-REINFORCE weight level: one weight per sequence or per token.",
        choices=IS_LEVELS,
    )
    cispo_eps_high: float = _loss(
        1.0,
        "CISPO: cap the token IS weight pi/mu at 1 + this (M1's eps_high^IS; no lower cap).",
        range=Range(low=0, finite=False, note="inf: no cap"),
    )
    refresh_every: int = _loss(
        1,
        "copy the trained params into the behaviour params every N steps (1 = on-policy; the "
        "paper uses 250).",
        range=AT_LEAST_ONE,
    )
    max_staleness: int = _loss(
        0, "k: a refresh's mu samples k steps later (age k..k+R-1).", range=AT_LEAST_ZERO
    )
    num_steps: int = _rollout(100, "number of gradient steps.", range=AT_LEAST_ZERO)
    prompts_per_step: int = _rollout(8, "P, prompts per step.", range=AT_LEAST_ONE)
    samples_per_prompt: int = _rollout(
        8,
        "G, completions per prompt.",
        range=Range(low=2, note="G samples per prompt give the per-prompt baseline"),
    )
    max_new_tokens: int = _rollout(16, "completion length limit.", range=AT_LEAST_ONE)
    temperature: float = _rollout(
        1.0, "training sampling temperature (1.0 in the paper).", range=POSITIVE
    )
    top_p: float = _rollout(1.0, "training nucleus mass.", range=Range(0, 1, low_open=True))
    rollout_engine: str = _rollout(
        "dense",
        "what samples rollouts (llm.rl.engine; dense: the KV-cache sampler; ragged: the same "
        "draws, shared prompt cache, cost of the live tokens; ragged-kernels: ragged with its "
        "decode attention on Pallas GPU kernels).",
        choices=tuple(ENGINES),
    )
    learner_distribution: str = _loss(
        "sampling",
        "log pi under: sampling (logits/temperature, top_p nucleus, as mu) or model (asymre).",
        choices=LEARNER_DISTRIBUTIONS,
    )
    learning_rate: float = _optimizer(1e-5, "peak learning rate of AdamW.", range=NONNEGATIVE)
    lr_schedule: str = _optimizer(
        "constant", "learning-rate shape after the linear warmup.", choices=SCHEDULES
    )
    warmup_steps: int = _optimizer(
        0, "linear warmup steps from 0 to the peak rate.", range=AT_LEAST_ZERO
    )
    min_lr_ratio: float = _optimizer(
        0.0, "cosine end value as a fraction of the peak.", range=UNIT_INTERVAL
    )
    schedule_steps: int | None = _optimizer(
        None,
        "horizon T of the cosine (None: num_steps); steps past T keep its final rate. Fixed "
        "for a run: set it to the old num_steps to change num_steps on resume.",
        range=Range(low=1, note="num_steps"),
    )
    weight_decay: float = _optimizer(0.0, "AdamW decoupled weight decay.", range=NONNEGATIVE)
    adam_b1: float = _optimizer(0.9, "AdamW beta1.", range=Range(0, 1, high_open=True))
    adam_b2: float = _optimizer(0.999, "AdamW beta2.", range=Range(0, 1, high_open=True))
    adam_eps: float = _optimizer(1e-8, "AdamW epsilon.", range=POSITIVE)
    max_grad_norm: float = _optimizer(
        1.0, "clip the global gradient norm to this (0 = no clipping).", range=NONNEGATIVE
    )
    micro_batches: int = _devices(
        1,
        "split the P*G sequences into this many micro-batches (exact gradient accumulation).",
        range=AT_LEAST_ONE,
    )
    logits_chunk_size: int = _devices(
        128,
        "sequence positions per slice when computing log-probs from the hidden states (the "
        "[b, T, V] logits are never held at once).",
        range=AT_LEAST_ONE,
    )
    remat: str = _devices(
        "none",
        "recompute each decoder layer in the backward pass: none, layer (keep only each "
        "layer's input; activation memory ~ layers x B x T x D) or dots (also keep its weight "
        "matmuls). Same gradients; costs about one more forward pass.",
        choices=REMAT_MODES,
    )
    scan_layers: bool = _devices(
        False, "one lax.scan over layers stored stacked (llm.models.stacked); kept on resume."
    )
    mesh: str | None = _devices(
        None, "the learner's device mesh, e.g. 'fsdp=4,tp=2' (None: all its devices on fsdp)."
    )
    mesh_subset: bool = _devices(
        False, "allow a mesh that uses fewer than all devices (otherwise refused)."
    )
    pipeline_depth: int = _devices(
        0, "rollouts sampled ahead during updates (exact; llm.rl.pipeline).", range=AT_LEAST_ZERO
    )
    rollout_devices: int = _devices(
        0, "sampler on the last N devices (of each process), fsdp; 0: share.", range=AT_LEAST_ZERO
    )
    max_nonfinite_steps: int = _run(
        3, "stop with an error after this many non-finite steps in a row.", range=AT_LEAST_ONE
    )
    eval_every: int = _evaluation(
        0,
        "evaluate every N steps (0 = only at the end when eval_prompts > 0).",
        range=AT_LEAST_ZERO,
    )
    eval_prompts: int = _evaluation(
        64, "held-out prompts per evaluation (0 = no evaluation).", range=AT_LEAST_ZERO
    )
    eval_temperature: float = _evaluation(
        0.1, "evaluation sampling temperature (paper: 0.1; 0 = greedy).", range=NONNEGATIVE
    )
    eval_top_p: float = _evaluation(
        0.95, "evaluation nucleus mass (paper: 0.95).", range=Range(0, 1, low_open=True)
    )
    eval_pass_k: int = _evaluation(
        0, "also report pass@k with k samples per eval prompt (0 = off).", range=AT_LEAST_ZERO
    )
    eval_max_new_tokens: int | None = _evaluation(
        None, "evaluation completion length.", range=Range(low=1, note="max_new_tokens")
    )
    seed: int = _run(
        0, "seed of everything: data order, sampling, evaluation.", range=AT_LEAST_ZERO
    )
    out_dir: str = _run(
        "runs/x",
        "run folder: metrics.jsonl, tensorboard/, checkpoints/, hf/ (and adapter/ with LoRA).",
    )
    checkpoint_every: int = _run(
        0,
        "save a checkpoint every N steps and at the end (0 = no checkpoints).",
        range=AT_LEAST_ZERO,
    )
    keep_checkpoints: int = _run(2, "keep the last N checkpoints.", range=AT_LEAST_ONE)
    resume: bool = _run(False, "continue from the latest checkpoint in out_dir.")
    export_hf: bool = _run(
        False,
        "write the final policy as a Hugging Face folder out_dir/hf (with LoRA: the merged "
        "model, and the adapters alone in PEFT's format in out_dir/adapter).",
    )
    tensorboard: bool = _run(True, "also write TensorBoard event files (needs tensorboardX).")
    log_every: int = _run(1, "print metrics every N steps (jsonl: every step).", range=AT_LEAST_ONE)
    progress: bool = _run(True, "show a tqdm progress bar.")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """A config from a flat mapping of field -> value (strings parsed as by `replace`);
        ConfigError for an unknown key (suggesting the close name) or a badly typed value."""
        unknown = [k for k in d if k not in _FIELDS]
        if unknown:
            raise ConfigError(None, unknown_message(unknown, _FIELDS))
        return cls(**{k: coerce(_FIELDS, k, v) for k, v in d.items()})

    @classmethod
    def from_file(cls, path: str | pathlib.Path) -> TrainConfig:
        """A config from a .json or .yaml/.yml file (a flat mapping of field -> value).

        Every problem (missing file, invalid JSON/YAML, unknown key, bad value) raises
        ConfigError with ``source=path``.
        """
        path = pathlib.Path(path)
        data = read_mapping(path)
        try:
            return cls.from_dict(data)
        except ConfigError as err:
            raise err.with_source(path) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **{k: coerce(_FIELDS, k, v) for k, v in changes.items()})

    def with_overrides(self, overrides: Mapping[str, Any]) -> TrainConfig:
        return self.replace(**overrides)

    # ------------------------------------------------------------------ derived values
    @property
    def batch_size(self) -> int:
        """P * G sequences per step."""
        return self.prompts_per_step * self.samples_per_prompt

    @property
    def loss_normalization(self) -> str:
        if self.normalization is not None or self.loss not in LOSS_REGISTRY:
            return self.normalization or "sequence"
        return default_normalization(self.loss)

    @property
    def reward_name(self) -> str:
        if self.reward is not None:
            return self.reward
        return {"arithmetic": "arithmetic", "gsm8k": "gsm8k"}.get(self.task, "math")

    def validate(self) -> TrainConfig:
        """Raise ConfigError (a ValueError) naming the first bad field; returns self. Checks
        types, then declared ranges / choices, then the rules that relate fields (one loss's
        options, data columns, LoRA, micro-batches, mesh syntax: `llm.rl.config_checks`)."""
        validate_config(self)
        return self


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
HELP = {name: option_of(f).help for name, f in _FIELDS.items()}  # field -> its help text
