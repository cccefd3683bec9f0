r"""The real-model task, chosen on validation before any RL run by a pre-registered rule.

Each candidate is a set of `make_arithmetic_examples` knobs, asked in words ("What is 12 + 7?"
+ the instruction "Answer with the number only." in the chat template). On its validation
split (never the test split) the step-0 model gives per problem a greedy hit and K sampled
hits at the training temperature; pass@1 = mean sampled hit, pass@K = P(any of K hit).

Rule (see results/smollm2_arith/README.md): a candidate is eligible when pass@K >= 2 pass@1
and 0.05 <= pass@1 <= 0.5; among the eligible ones the largest headroom pass@K - pass@1 wins.
The 2 x 2 (results/smollm2_arith/PREREGISTRATION_2x2.md) measures at 32 new tokens and, only
if no candidate is eligible there, at 64; it adds ``add_0to19`` and stores every evaluated
completion's extracted answer with its hit (``--answers``), so format learning can be told
from arithmetic.

    python -m llm.experiments.task_choice --out results/smollm2_arith/task_choice.json
    python -m llm.experiments.task_choice --max-new-tokens 32 64 --with-0to19 \
        --out results/smollm2_arith/two_by_two/task_choice.json
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

from llm.data.arithmetic import as_questions as as_questions  # re-exported
from llm.experiments import offpolicy_sweep as sweep
from llm.experiments.presets import PRESETS, RunSpec
from llm.rl.state import make_setup

__all__ = ["CANDIDATES", "CANDIDATES_2X2", "as_questions", "choose", "eligible", "measure"]

CANDIDATES: dict[str, dict[str, Any]] = {
    # 1-digit a+b is left out: 55 distinct problems cannot fill disjoint test/validation/RL
    "add_1to2d": dict(num_operands=2, digits=(1, 2), operators="+"),  # tiny-arith's task
    "add_2d": dict(num_operands=2, digits=2, operators="+"),
    "mul_1to2d": dict(num_operands=2, digits=(1, 2), operators="*"),
    "add3_1d": dict(num_operands=3, digits=1, operators="+"),
    "sub_2d": dict(num_operands=2, digits=2, operators="-"),
}
# the 2 x 2's candidates: the five above and a + b with operands 0..19 (210 problems)
CANDIDATES_2X2 = CANDIDATES | {
    "add_0to19": dict(num_operands=2, operand_range=(0, 19), operators="+"),
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


def _answers(examples, extracted, hits) -> list[dict]:
    """Per problem: the reference and, per completion, the extracted answer and its hit."""
    return [
        {"answer": ex.answer, "extracted": list(row), "hit": [bool(h) for h in hit_row]}
        for ex, row, hit_row in zip(examples, extracted, hits, strict=True)
    ]


def measure(
    preset, candidates: dict[str, dict], *, num_problems: int, k: int, answers: bool = False
) -> dict:
    """Step-0 validation greedy accuracy, pass@1 and pass@k per candidate task (with
    ``answers``, also every completion's extracted answer and hit, greedy and sampled)."""
    spec = RunSpec("step0", "", "asymre", -0.1, 1)
    cfg = sweep.train_config(preset, sweep.model_folder(preset), spec, 0, 1e-4, "/tmp/unused")
    setup, params = make_setup(cfg)
    scores, stored = {}, {}
    for name, task in candidates.items():
        t = time.perf_counter()
        val = sweep.make_splits(dataclasses.replace(preset, task=task))["sft_val"][:num_problems]
        greedy, sampled, greedy_answers, sampled_answers = sweep.answer_scorer(
            preset, setup, val, samples=k
        )(params)
        scores[name] = {
            "task": task,
            "num_problems": len(val),
            "greedy_accuracy": float(np.mean(greedy)),
            "pass@1": float(np.mean(sampled)),
            f"pass@{k}": float(np.mean(np.any(sampled, axis=1))),
            "seconds": time.perf_counter() - t,
        }
        if answers:
            stored[name] = {
                "greedy": _answers(val, [[a] for a in greedy_answers], greedy[:, None]),
                "sampled": _answers(val, sampled_answers, sampled),
            }
        print(name, {a: b for a, b in scores[name].items() if a != "task"}, flush=True)
    result = {"split": "sft_val (validation)", "k": k, "scores": scores}
    result |= {"chosen": choose(scores, k)}
    return result | ({"answers": stored} if answers else {})


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="smollm2-arith")
    p.add_argument("--problems", type=int, default=48)
    p.add_argument("--k", type=int, default=8)
    p.add_argument(
        "--max-new-tokens",
        type=int,
        nargs="+",
        default=None,
        help="lengths tried in order, stopping at the first with an eligible candidate "
        "(default: the preset's)",
    )
    p.add_argument("--with-0to19", action="store_true", help="the 2 x 2's candidates")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if a.max_new_tokens is not None and any(n < 1 for n in a.max_new_tokens):
        p.error(f"--max-new-tokens must be >= 1, got {a.max_new_tokens}")
    preset = PRESETS[a.preset]
    candidates = CANDIDATES_2X2 if a.with_0to19 else CANDIDATES
    out = pathlib.Path(a.out)
    for n in a.max_new_tokens or [preset.train["max_new_tokens"]]:
        tried = dataclasses.replace(preset, train=preset.train | {"max_new_tokens": n})
        result = measure(
            tried, candidates, num_problems=a.problems, k=a.k, answers=a.with_0to19
        ) | {"max_new_tokens": n}
        path = out if a.max_new_tokens is None else out.with_name(f"{out.stem}_{n}{out.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"max_new_tokens={n} chosen:", result["chosen"], flush=True)
        if result["chosen"] is not None:
            break


if __name__ == "__main__":
    main()
