"""Reproducible experiments on the LLM side.

`offpolicy_sweep`: the paper's off-policy LLM claim at tiny scale on CPU (disjoint splits,
supervised warm start, learning rate chosen on SFT validation, AsymRE over delta_v with a
stale behaviour policy, the on-policy control and GRPO; every run is a `llm.trainer.train`
evaluated at step 0 and every E steps with one key); `presets` (the sweep's settings and
runs), `splits` (disjoint splits by construction), `stats` (bootstrap intervals over
problems and seeds), `report` (summary.json / summary.md, targets, figures).

    python -m llm.experiments.offpolicy_sweep --quick --out runs/tiny_arith_quick
"""
