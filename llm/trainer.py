"""``llm.trainer.train``: the off-policy trainer's entry point (its pieces live in ``llm.rl``)."""

from llm.distributed import initialize_distributed
from llm.rl.config import TrainConfig
from llm.rl.evaluation import evaluate
from llm.rl.loop import run_evaluation, train

__all__ = ["TrainConfig", "evaluate", "initialize_distributed", "run_evaluation", "train"]
