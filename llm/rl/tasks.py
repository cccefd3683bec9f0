"""The trainer's examples: the configured task's (train, eval) split, or the caller's own.

``cfg.task == "arithmetic"`` generates problems (``task_kwargs``: num_examples,
num_eval_examples, seed and `make_arithmetic_examples`' knobs); the evaluation problems come
from a separate seed (`llm.rl.keys.eval_data_seed`). Any other task loads ``cfg.data_path``
(and ``cfg.eval_data_path`` or the same file for evaluation) with `llm.data.load_dataset`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from llm.data import datasets as data_lib
from llm.rl.config import TrainConfig
from llm.rl.keys import eval_data_seed

__all__ = ["as_examples", "load_task", "run_examples"]


def load_task(cfg: TrainConfig) -> tuple[list, list]:
    """(train examples, eval examples) of the configured task."""
    kwargs = dict(cfg.task_kwargs)
    if cfg.task == "arithmetic":
        num_eval = int(kwargs.pop("num_eval_examples", max(cfg.eval_prompts, 1)))
        seed = int(kwargs.pop("seed", cfg.seed))
        train_ex = data_lib.make_arithmetic_examples(
            int(kwargs.pop("num_examples", 1000)), seed=seed, **kwargs
        )
        eval_ex = data_lib.make_arithmetic_examples(num_eval, seed=eval_data_seed(seed), **kwargs)
        return train_ex, eval_ex
    fields = {"prompt_field": cfg.prompt_field, "answer_field": cfg.answer_field}
    kwargs |= {k: v for k, v in fields.items() if v is not None}
    train_ex = data_lib.load_dataset(cfg.task, cfg.data_path, split=cfg.train_split, **kwargs)
    eval_path = cfg.eval_data_path or cfg.data_path
    eval_kwargs = {k: v for k, v in kwargs.items() if k != "limit"}
    eval_ex = data_lib.load_dataset(cfg.task, eval_path, split=cfg.eval_split, **eval_kwargs)
    return train_ex, eval_ex


def as_examples(items: Iterable, name: str) -> list[data_lib.Example]:
    """A list of `Example` from examples or dicts with "prompt" and "answer" (other keys
    become columns the reward receives)."""
    out = []
    for i, item in enumerate(items):
        if isinstance(item, data_lib.Example):
            out.append(item)
        elif isinstance(item, Mapping) and "prompt" in item and "answer" in item:
            columns = {k: v for k, v in item.items() if k not in ("prompt", "answer")}
            out.append(data_lib.Example(str(item["prompt"]), str(item["answer"]), columns))
        else:
            raise TypeError(
                f"{name}[{i}] must be an llm.data.Example or a mapping with 'prompt' and "
                f"'answer', got {type(item).__name__}"
            )
    if not out:
        raise ValueError(f"{name} is empty")
    return out


def run_examples(
    cfg: TrainConfig, dataset: Iterable | None = None, eval_dataset: Iterable | None = None
) -> tuple[list, list]:
    """(train examples, the first ``cfg.eval_prompts`` eval examples): ``dataset`` /
    ``eval_dataset`` when given, else the task's (loaded only when needed)."""
    need_eval = cfg.eval_prompts > 0 and eval_dataset is None
    task = load_task(cfg) if dataset is None or need_eval else ([], [])
    train_ex = as_examples(dataset, "dataset") if dataset is not None else task[0]
    if cfg.eval_prompts <= 0:
        return train_ex, []
    eval_ex = as_examples(eval_dataset, "eval_dataset") if eval_dataset is not None else task[1]
    return train_ex, eval_ex[: cfg.eval_prompts]
