"""Reproducible experiments on the LLM side.

`llm.experiments.offpolicy_sweep`: the paper's off-policy LLM claim at tiny scale on CPU
(supervised warm start, then AsymRE over delta_v with a stale behaviour policy, the on-policy
control and GRPO in the same regime; per-step metrics, figures, summary table).

    python -m llm.experiments.offpolicy_sweep --preset tiny-arith --quick --out runs/tiny_arith
"""
