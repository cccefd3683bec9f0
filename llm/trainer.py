"""``llm.trainer.train``: the off-policy trainer's entry point (its pieces live in ``llm.rl``)."""

from llm.rl.config import TrainConfig
from llm.rl.loop import evaluate, initialize_distributed, train

__all__ = ["TrainConfig", "evaluate", "initialize_distributed", "train"]
