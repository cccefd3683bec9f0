"""Plan a run before renting it: memory per device, FLOPs and roofline time of one RL step.

    python -m llm.plan --model-config qwen2.5-7b --mesh fsdp=8 --json

builds the real-size model abstractly (``nnx.eval_shape``: shapes, dtypes and shardings,
no weights), compiles the trainer's train step and the sampler's prefill and decode for the
mesh on simulated CPU devices (`llm.plan.programs`), and reports what each device holds
(from XLA's memory analysis), the step's FLOPs (XLA's cost analysis where exact, else the
hand count of `llm.plan.counts`) and its roofline time and MFU on the accelerators of
`llm.plan.hardware` (`llm.plan.report`). docs/llm/plan.md explains how to read the output.
"""

from llm.plan.hardware import ACCELERATORS, Accelerator
from llm.plan.report import plan_run
from llm.plan.shipped import SHIPPED_CONFIGS, model_config_path

__all__ = ["ACCELERATORS", "SHIPPED_CONFIGS", "Accelerator", "model_config_path", "plan_run"]
