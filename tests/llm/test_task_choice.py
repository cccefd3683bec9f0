"""The real-model task choice: the pre-registered headroom rule and the question form."""

from llm.data.arithmetic import as_questions
from llm.data.datasets import Example
from llm.experiments.splits import canonical_key
from llm.experiments.task_choice import choose, eligible


def test_headroom_rule_boundaries():
    assert eligible(0.05, 0.10) and eligible(0.5, 1.0)
    assert not eligible(0.049, 0.5)  # too hard
    assert not eligible(0.51, 1.0)  # too easy
    assert not eligible(0.2, 0.39)  # pass@8 < 2 pass@1


def test_choose_takes_the_most_headroom_among_eligible_only():
    scores = {
        "hard": {"pass@1": 0.03, "pass@8": 0.9},  # most headroom but not eligible
        "a": {"pass@1": 0.1, "pass@8": 0.3},
        "b": {"pass@1": 0.2, "pass@8": 0.6},
    }
    assert choose(scores, 8) == "b"
    assert choose({"hard": scores["hard"]}, 8) is None


def test_questions_keep_the_problem_identity():
    (q,) = as_questions([Example("12*7=", "84", {"expression": "12*7"})])
    assert q.prompt == "What is 12 * 7?" and q.answer == "84"
    assert canonical_key(q) == canonical_key(Example("7*12=", "84"))


def test_add_0to19_candidate_has_210_problems_and_disjoint_splits():
    import dataclasses

    from llm.experiments import offpolicy_sweep as sweep
    from llm.experiments.presets import SMOLLM2_ARITH
    from llm.experiments.task_choice import CANDIDATES_2X2

    preset = dataclasses.replace(SMOLLM2_ARITH, task=CANDIDATES_2X2["add_0to19"])
    splits = sweep.make_splits(preset)
    keys = {name: {canonical_key(ex) for ex in v} for name, v in splits.items()}
    assert {k: len(v) for k, v in keys.items()} == {"test": 64, "sft_val": 48, "rl_train": 98}
    assert not (keys["test"] & keys["sft_val"] or keys["test"] & keys["rl_train"])
    assert not keys["sft_val"] & keys["rl_train"]


def test_stored_answers_keep_extraction_and_hit():
    from llm.experiments.task_choice import _answers

    (row,) = _answers([Example("What is 2 + 3?", "5")], [["5", "6", None]], [[1, 0, 0]])
    assert row == {"answer": "5", "extracted": ["5", "6", None], "hit": [True, False, False]}


def test_cli_rejects_a_bad_length(capsys):
    import pytest

    from llm.experiments.task_choice import main

    with pytest.raises(SystemExit):
        main(["--max-new-tokens", "32", "0", "--out", "/tmp/unused.json"])
    assert "error: --max-new-tokens must be >= 1" in capsys.readouterr().err
