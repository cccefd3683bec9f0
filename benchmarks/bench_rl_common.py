"""What both sides of ``bench_rl.py`` share: model sizes, their checkpoints, the prompts.

``bench_rl.py`` (ours) and ``bench_rl_trl.py`` (TRL, in a process of its own) import this
module: it puts the repository on ``sys.path``, keeps Hugging Face offline, builds the
random checkpoint of a size name once per workdir, draws the arithmetic problems, and holds
the ``Settings`` of a run (P prompts x G samples, new tokens, sampling, optimizer), and the
one-line-error argument parser of the bench's flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import statistics
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = pathlib.Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

FAMILY = "llama"
SIZE_NAMES = ("arith", "small", "tiny", "toy")
TOY_MODEL = dict(
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
    intermediate_size=64,
)


def size_spec(name: str) -> tuple[str, dict]:
    """(llm.models.tiny size, ModelConfig overrides) of a benchmark size name."""
    if name == "arith":
        from llm.sft import TINY_ARITH_MODEL

        return "tiny", dict(TINY_ARITH_MODEL)
    if name in ("tiny", "small"):
        return name, {}
    if name == "toy":  # one layer: compiles fastest (tests, --quick)
        return "tiny", dict(TOY_MODEL)
    raise ValueError(f"unknown size {name!r}; choose from {', '.join(SIZE_NAMES)}")


def checkpoint(workdir: pathlib.Path, name: str) -> pathlib.Path:
    """The random checkpoint folder of a size (built once per workdir; seed 0)."""
    from llm.models.tiny import make_tiny_checkpoint

    path = workdir / f"{name}_{FAMILY}"
    if not (path / "config.json").exists():
        size, overrides = size_spec(name)
        make_tiny_checkpoint(path, FAMILY, size, seed=0, **overrides)
    return path


def examples(num: int, seed: int = 0) -> list:
    """Arithmetic problems of the tiny-arith task (``llm.sft.TINY_ARITH_TASK``)."""
    from llm.data import make_arithmetic_examples
    from llm.sft import TINY_ARITH_TASK

    return make_arithmetic_examples(num, seed=seed, **TINY_ARITH_TASK)


@dataclasses.dataclass(frozen=True)
class Settings:
    prompts: int = 8
    samples: int = 8
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    learning_rate: float = 1e-5
    max_grad_norm: float = 1.0
    delta_v: float = -0.1
    steps: int = 10
    lora_rank: int = 0  # > 0: both sides train LoRA adapters of this rank (alpha 2r), base frozen


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``PROG: error: MESSAGE`` (exit status 2): the one of
    ``llm.models.gguf``, here so that parsing imports no jax (``--threads 1`` sets XLA_FLAGS
    after parsing, before jax is imported)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _median(xs) -> float:
    return float(statistics.median(xs)) if xs else float("nan")
