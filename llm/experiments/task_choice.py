r"""The real-model task, chosen on validation before any RL run by a pre-registered rule.

Each candidate is a set of `make_arithmetic_examples` knobs, asked in words ("What is 12 + 7?"
+ the instruction "Answer with the number only." in the chat template). On its validation
split (never the test split) the step-0 model gives per problem a greedy hit and K sampled
hits at the training temperature; pass@1 = mean sampled hit, pass@K = P(any of K hit).

Rule (see results/smollm2_arith/README.md): a candidate is eligible when pass@K >= 2 pass@1
and 0.05 <= pass@1 <= 0.5; among the eligible ones the largest headroom pass@K - pass@1 wins.

    python -m llm.experiments.task_choice --out results/smollm2_arith/task_choice.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["CANDIDATES", "choose", "eligible", "measure"]

CANDIDATES: dict[str, dict[str, Any]] = {
    # 1-digit a+b is left out: 55 distinct problems cannot fill disjoint test/validation/RL
    "add_1to2d": dict(num_operands=2, digits=(1, 2), operators="+"),  # tiny-arith's task
    "add_2d": dict(num_operands=2, digits=2, operators="+"),
    "mul_1to2d": dict(num_operands=2, digits=(1, 2), operators="*"),
    "add3_1d": dict(num_operands=3, digits=1, operators="+"),
    "sub_2d": dict(num_operands=2, digits=2, operators="-"),
}


def eligible(pass1: float, passk: float) -> bool:
    """The pre-registered headroom rule."""
    return passk >= 2 * pass1 and 0.05 <= pass1 <= 0.5


def choose(scores: dict[str, dict[str, float]], k: int) -> str | None:
    """The eligible candidate with the most headroom pass@k - pass@1 (None if none is)."""
    ok = {
        n: s[f"pass@{k}"] - s["pass@1"]
        for n, s in scores.items()
        if eligible(s["pass@1"], s[f"pass@{k}"])
    }
    return max(ok, key=ok.get) if ok else None


def measure(preset, candidates: dict[str, dict], *, num_problems: int, k: int) -> dict:
    """Step-0 validation greedy accuracy, pass@1 and pass@k per candidate task."""
    from llm.experiments import offpolicy_sweep as sweep
    from llm.experiments.presets import RunSpec
    from llm.rl.state import make_setup

    spec = RunSpec("step0", "", "asymre", -0.1, 1)
    cfg = sweep.train_config(preset, sweep.model_folder(preset), spec, 0, 1e-4, "/tmp/unused")
    setup, params = make_setup(cfg)
    scores = {}
    for name, task in candidates.items():
        t = time.perf_counter()
        val = sweep.make_splits(dataclasses.replace(preset, task=task))["sft_val"][:num_problems]
        greedy, sampled = sweep.scorer(preset, setup, val, samples=k)(params)
        scores[name] = {
            "task": task,
            "num_problems": len(val),
            "greedy_accuracy": float(np.mean(greedy)),
            "pass@1": float(np.mean(sampled)),
            f"pass@{k}": float(np.mean(np.any(sampled, axis=1))),
            "seconds": time.perf_counter() - t,
        }
        print(name, {a: b for a, b in scores[name].items() if a != "task"}, flush=True)
    return {"split": "sft_val (validation)", "k": k, "scores": scores, "chosen": choose(scores, k)}


def main(argv: Sequence[str] | None = None) -> None:
    from llm.experiments.presets import PRESETS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="smollm2-arith")
    p.add_argument("--problems", type=int, default=48)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    result = measure(PRESETS[a.preset], CANDIDATES, num_problems=a.problems, k=a.k)
    pathlib.Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print("chosen:", result["chosen"])


if __name__ == "__main__":
    main()
