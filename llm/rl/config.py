"""The trainer's run configuration: one flat, JSON-serialisable dataclass.

`TrainConfig` holds every option of `llm.rl.loop.train` and of the `python -m llm.train`
command line (one flag per field). It is read from a JSON or YAML file
(`TrainConfig.from_file`), updated with `key=value` overrides (`with_overrides`), checked
once (`validate`, called by `train`), and stored in every checkpoint (`to_dict`) so a
resumed run can refuse a configuration that would not continue the same run.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Mapping
from typing import Any

from llm.errors import ConfigError
from llm.rl.config_checks import IS_LEVELS as IS_LEVELS
from llm.rl.config_checks import REWARD_SCALES as REWARD_SCALES
from llm.rl.config_checks import coerce, unknown_message, validate_config

TASKS = ("arithmetic", "gsm8k", "math500", "table", "jsonl")
LOSSES = ("asymre", "grpo", "is_reinforce")
SCHEDULES = ("constant", "cosine")

# Fields that may change between a run and its resumption (they do not alter the maths).
RESUME_MUTABLE = (
    "num_steps",
    "out_dir",
    "resume",
    "progress",
    "checkpoint_every",
    "keep_checkpoints",
    "eval_every",
    "export_hf",
    "tensorboard",
    "log_every",
)

HELP = {
    "model_path": "Hugging Face folder (config.json, *.safetensors, tokenizer) to fine-tune.",
    "dtype": "parameter dtype: float32 | bfloat16 (optimizer moments follow it).",
    "compute_dtype": "matmul dtype (None: dtype).",
    "lora_rank": "LoRA rank r: train low-rank adapters on the frozen model (0 = full "
    "fine-tuning). The behaviour policy is the base plus a stale copy of the adapters.",
    "lora_alpha": "LoRA scale numerator: the update is (alpha / r) x A B (None: 2 * lora_rank).",
    "lora_targets": "comma-separated projections that get adapters: q,k,v,o (attention), "
    "gate,up,down (MLP).",
    "task": "arithmetic (synthetic, no data) | gsm8k | math500 | table (any columns; alias jsonl).",
    "data_path": "training data: a jsonl file, a folder of {split}.jsonl, a parquet file or "
    "folder, or a Hugging Face dataset saved with save_to_disk.",
    "eval_data_path": "held-out data, same formats (None: data_path with split eval_split).",
    "prompt_field": "column holding the question (None: the task's: prompt, question for "
    "gsm8k, problem for math500).",
    "answer_field": "column holding the reference answer (None: the task's, answer).",
    "train_split": "split name when data_path is a folder.",
    "eval_split": "split name when the eval path is a folder.",
    "task_kwargs": "JSON dict for the task: arithmetic knobs (num_examples, digits, "
    "num_operands, operators), limit.",
    "reward": "reward function name (None: from the task; jsonl uses 'math').",
    "reward_scale": "pm1 (+1/-1, the paper's) | 01.",
    "chat": "render prompts with the chat template (None: yes when the tokenizer has one, "
    "no for arithmetic).",
    "system_prompt": "optional system message for chat prompts.",
    "instruction": "text appended to each question in chat prompts ('' for none).",
    "loss": "asymre | grpo (PPO-clipped ratio) | is_reinforce (truncated IS weights).",
    "delta_v": "AsymRE baseline shift: V = mean of the G rewards of a prompt + delta_v.",
    "normalization": "loss normalisation: sequence | token | sequence_mean | constant "
    "(None: sequence for asymre/is_reinforce, sequence_mean for grpo).",
    "grpo_epsilon": "GRPO clip range epsilon (lower side, and upper side unless set).",
    "grpo_epsilon_high": "GRPO upper clip epsilon (DAPO's clip-higher; None: grpo_epsilon).",
    "kl_beta": "GRPO k3 KL coefficient against the frozen initial policy (0 = off; > 0 keeps "
    "a reference copy of the params).",
    "leave_one_out": "AsymRE / IS-REINFORCE: baseline from the other G - 1 rewards of the "
    "prompt (RLOO) instead of all G.",
    "advantage_scale": "AsymRE / IS-REINFORCE advantage scale: none | group_std.",
    "is_truncation": "IS-REINFORCE weight truncation c.",
    "is_level": "IS-REINFORCE weight level: sequence | token.",
    "refresh_every": "copy the trained params into the behaviour params every N steps "
    "(1 = on-policy; the paper uses 250).",
    "num_steps": "number of gradient steps.",
    "prompts_per_step": "P, prompts per step.",
    "samples_per_prompt": "G, completions per prompt (>= 2).",
    "max_new_tokens": "completion length limit.",
    "temperature": "training sampling temperature (1.0 in the paper).",
    "top_p": "training nucleus mass.",
    "learning_rate": "peak learning rate of AdamW.",
    "lr_schedule": "constant | cosine (after the linear warmup).",
    "warmup_steps": "linear warmup steps from 0 to the peak rate.",
    "min_lr_ratio": "cosine end value as a fraction of the peak.",
    "weight_decay": "AdamW decoupled weight decay.",
    "adam_b1": "AdamW beta1.",
    "adam_b2": "AdamW beta2.",
    "adam_eps": "AdamW epsilon.",
    "max_grad_norm": "clip the global gradient norm to this (0 = no clipping).",
    "micro_batches": "split the P*G sequences into this many micro-batches (exact "
    "gradient accumulation).",
    "logits_chunk_size": "sequence positions per slice when computing log-probs from the "
    "hidden states (the [b, T, V] logits are never held at once).",
    "mesh": "device mesh, e.g. 'fsdp=4,tp=2' (None: all devices on fsdp).",
    "mesh_subset": "allow a mesh that uses fewer than all devices (otherwise refused).",
    "max_nonfinite_steps": "stop with an error after this many non-finite steps in a row.",
    "eval_every": "evaluate every N steps (0 = only at the end when eval_prompts > 0).",
    "eval_prompts": "held-out prompts per evaluation (0 = no evaluation).",
    "eval_temperature": "evaluation sampling temperature (paper: 0.1).",
    "eval_top_p": "evaluation nucleus mass (paper: 0.95).",
    "eval_pass_k": "also report pass@k with k samples per eval prompt (0 = off).",
    "eval_max_new_tokens": "evaluation completion length (None: max_new_tokens).",
    "seed": "seed of everything: data order, sampling, evaluation.",
    "out_dir": "run folder: metrics.jsonl, tensorboard/, checkpoints/, hf/ (and adapter/ "
    "with LoRA).",
    "checkpoint_every": "save a checkpoint every N steps and at the end (0 = no checkpoints).",
    "keep_checkpoints": "keep the last N checkpoints.",
    "resume": "continue from the latest checkpoint in out_dir.",
    "export_hf": "write the final policy as a Hugging Face folder out_dir/hf (with LoRA: "
    "the merged model, and the adapters alone in PEFT's format in out_dir/adapter).",
    "tensorboard": "also write TensorBoard event files (needs tensorboardX).",
    "log_every": "print a metrics line every N steps (the jsonl gets every step).",
    "progress": "show a tqdm progress bar.",
}


@dataclasses.dataclass
class TrainConfig:
    """Every option of the off-policy trainer; see `HELP` (or `python -m llm.train --help`)."""

    model_path: str = ""
    dtype: str = "float32"
    compute_dtype: str | None = None
    lora_rank: int = 0
    lora_alpha: float | None = None
    lora_targets: str = "q,k,v,o,gate,up,down"
    task: str = "arithmetic"
    data_path: str | None = None
    eval_data_path: str | None = None
    train_split: str = "train"
    eval_split: str = "test"
    prompt_field: str | None = None
    answer_field: str | None = None
    task_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    reward: str | None = None
    reward_scale: str = "pm1"
    chat: bool | None = None
    system_prompt: str | None = None
    instruction: str | None = None
    loss: str = "asymre"
    delta_v: float = -0.1
    normalization: str | None = None
    grpo_epsilon: float = 0.2
    grpo_epsilon_high: float | None = None
    kl_beta: float = 0.0
    leave_one_out: bool = False
    advantage_scale: str = "none"
    is_truncation: float = 1.0
    is_level: str = "sequence"
    refresh_every: int = 1
    num_steps: int = 100
    prompts_per_step: int = 8
    samples_per_prompt: int = 8
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    learning_rate: float = 1e-5
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    micro_batches: int = 1
    logits_chunk_size: int = 128
    mesh: str | None = None
    mesh_subset: bool = False
    max_nonfinite_steps: int = 3
    eval_every: int = 0
    eval_prompts: int = 64
    eval_temperature: float = 0.1
    eval_top_p: float = 0.95
    eval_pass_k: int = 0
    eval_max_new_tokens: int | None = None
    seed: int = 0
    out_dir: str = "runs/x"
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    resume: bool = False
    export_hf: bool = False
    tensorboard: bool = True
    log_every: int = 1
    progress: bool = True

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """A config from a flat mapping of field -> value (strings are parsed as by `replace`).

        Raises ConfigError for an unknown key (suggesting the close field name) or a value
        of the wrong type.
        """
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
        if not path.exists():
            raise ConfigError(None, "no such file", source=path)
        if not path.is_file():
            raise ConfigError(None, "is not a file (expected a .json or .yaml file)", source=path)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(None, f"cannot be read ({err})", source=path) from None
        if path.suffix == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                msg = f"invalid JSON: {err.msg} (line {err.lineno}, column {err.colno})"
                raise ConfigError(None, msg, source=path) from None
        else:
            import yaml  # PyYAML, installed with transformers (YAML also reads JSON)

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as err:
                mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
                msg = " ".join(str(err).split())
                if mark is not None and problem:
                    msg = f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
                raise ConfigError(None, f"invalid YAML: {msg}", source=path) from None
        data = {} if data is None else data
        if not isinstance(data, Mapping):
            msg = f"expected a mapping of TrainConfig fields, got {type(data).__name__}"
            raise ConfigError(None, msg, source=path)
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
        if self.normalization is not None:
            return self.normalization
        return "sequence_mean" if self.loss == "grpo" else "sequence"

    @property
    def reward_name(self) -> str:
        if self.reward is not None:
            return self.reward
        return {"arithmetic": "arithmetic", "gsm8k": "gsm8k"}.get(self.task, "math")

    def validate(self) -> TrainConfig:
        """Raise ConfigError (a ValueError) naming the first bad field; returns self.

        Checks every field's type, the range of every number (NaN and inf are refused
        wherever they mean nothing), the choices of every named option, the options that only
        one loss reads, the mesh syntax (the device count is checked by `make_mesh`), and
        that ``model_path`` is a folder with a config.json (see `llm.rl.config_checks`).
        """
        validate_config(self)
        return self


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
