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
