"""llm.data.rewards: answer extraction, the three rewards, scales, and the math-verify pool's limits."""

import os
import signal
import threading
import time
from fractions import Fraction

import pytest

from llm.data.datasets import load_gsm8k, load_math500, make_arithmetic_examples
from llm.data.rewards import (
    MathVerifyPool,
    arithmetic_reward,
    default_math_pool,
    extract_answer,
    get_reward_fn,
    gsm8k_reward,
    last_boxed,
    math_reward,
    parse_number,
    reward_levels,
)

TIMEOUT = 2.0
NESTED = "\\boxed{" + "(" * 300 + "1" + ")" * 300 + "}"  # math-verify's parser takes seconds
SLOW = [
    "\\boxed{9^{9^{9^{9}}}}",
    NESTED,
    "\\boxed{(10^{100})!}",
    "so the answer is $" + "+".join(["x^{9^{9}}"] * 2000) + "$",
]


@pytest.fixture(scope="module")
def pool():
    """One pool for the correctness tests: a generous timeout, so a loaded machine
    (parallel test workers) cannot turn a slow-but-correct check into a wrong answer."""
    with MathVerifyPool(2, timeout=30.0) as p:
        yield p


@pytest.fixture(scope="module")
def fast_pool():
    """A short per-item timeout, for the completions built to make the grader slow."""
    with MathVerifyPool(2, timeout=TIMEOUT) as p:
        yield p


@pytest.fixture(scope="module")
def bare_pool():
    """math-verify's own alarms off: only the pool's hard timeout can stop a slow item."""
    with MathVerifyPool(1, timeout=1.0, signal_timeout=0) as p:
        yield p


# ----------------------------------------------------------------------------- extraction


def test_reward_levels():
    assert reward_levels() == (1.0, -1.0)
    assert reward_levels("01") == (1.0, 0.0)
    assert reward_levels(correct=2.0, incorrect=-0.5) == (2.0, -0.5)
    assert reward_levels("01", incorrect=-3) == (1.0, -3.0)
    with pytest.raises(ValueError, match="scale"):
        reward_levels("pm2")
    with pytest.raises(ValueError, match="finite"):
        reward_levels(correct=float("nan"))


def test_last_boxed():
    assert last_boxed("a \\boxed{1} b \\boxed{\\frac{1}{2}} c") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{ {a}{b{c}} }") == "{a}{b{c}}"
    assert last_boxed("x \\boxed{2} then \\boxed{3") == "2"  # unbalanced last one skipped
    assert last_boxed("\\fbox{7}") == "7"
    assert last_boxed("$\\boxed 5$") == "5"
    assert last_boxed("\\boxedx{3}") is None
    assert last_boxed("no box") is None
    assert last_boxed(None) is None


def test_extract_answer_fallbacks():
    assert extract_answer("... #### 42\nmore") == "42"
    assert extract_answer("\\boxed{7} #### 42") == "7"
    assert extract_answer("we get 3 then 12.5.") == "12.5"
    assert extract_answer("we get 3", last_number=False) is None
    assert extract_answer("#### 4", hash_marker=False) == "4"
    assert extract_answer("nothing") is None
    assert extract_answer(b"\\boxed{1}") is None


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1,234", 1234),
        ("\\$18.00", 18),
        ("$-3$", -3),
        ("50\\%", 50),
        ("1/2", Fraction(1, 2)),
        ("\\frac{3}{4}", Fraction(3, 4)),
        ("-\\dfrac{1}{2}", Fraction(-1, 2)),
        ("\\frac12", Fraction(1, 2)),
        ("\\text{18 dollars}", 18),
        (".5", Fraction(1, 2)),
    ],
)
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_parse_number_strict_and_malformed():
    assert parse_number("18 dollars") == 18
    assert parse_number("18 dollars", strict=True) is None
    for bad in (None, "", "abc", "1/0", "\\frac{1}{0}"):
        assert parse_number(bad) is None


# ----------------------------------------------------------------------------- gsm8k


def test_gsm8k_reward_shared(shared_data):
    rows = load_gsm8k(shared_data / "gsm8k", limit=30)
    answers = [ex.answer for ex in rows]
    right = [f"Reasoning...\nSo the answer is \\boxed{{{a}}}." for a in answers]
    wrong = [f"\\boxed{{{int(a) + 1}}}" for a in answers]
    assert gsm8k_reward(None, right, answers) == [1.0] * 30
    assert gsm8k_reward(None, wrong, answers) == [-1.0] * 30
    # the reference solutions themselves ("... #### 18") and full solutions as the answer column
    solutions = [ex.columns["solution"] for ex in rows]
    assert gsm8k_reward(None, solutions, answers, scale="01") == [1.0] * 30
    assert gsm8k_reward(None, right, solutions) == [1.0] * 30


def test_gsm8k_reward_forms_and_malformed():
    comps = ["\\boxed{1,234}", "\\boxed{\\$1234.00}", "#### 1234", "It is 1234.", "\\boxed{1235}"]
    assert gsm8k_reward(None, comps, ["1234"] * 5) == [1, 1, 1, 1, -1]
    malformed = ["", "}}}{{\\boxed{", "\\boxed{}", "no number", None, "\\boxed{1/0}"]
    assert gsm8k_reward(None, malformed, ["3"] * 6, correct=5.0, incorrect=-2.0) == [-2.0] * 6
    assert gsm8k_reward(["p"], ["\\boxed{3}"], ["3"], level=[1]) == [1.0]  # extra columns ignored
    with pytest.raises(ValueError, match="column 'answer'"):
        gsm8k_reward(None, ["1", "2"], ["1"])
    with pytest.raises(TypeError, match="completions"):
        gsm8k_reward(None, "1", ["1"])


# ----------------------------------------------------------------------------- arithmetic


def test_arithmetic_reward_on_generated_tasks():
    exs = make_arithmetic_examples(
        50, seed=1, num_operands=(2, 3), operators="+-*", allow_negative=True
    )
    answers = [ex.answer for ex in exs]
    assert arithmetic_reward(None, answers, answers) == [1.0] * 50
    off = [str(int(a) + 1) for a in answers]
    assert arithmetic_reward(None, off, answers, scale="01") == [0.0] * 50


def test_arithmetic_reward_is_strict():
    comps = [
        "19",
        " 19 \nnext line 20",
        "\\boxed{19}",
        "19abc",
        "1 9",
        "",
        "the answer is 19",
        "19.0",
    ]
    assert arithmetic_reward(None, comps, ["19"] * len(comps)) == [1, 1, 1, -1, -1, -1, -1, -1]
    assert arithmetic_reward(None, ["-7"], ["-7"]) == [1.0]


# ----------------------------------------------------------------------------- math


def test_math_reward_shared(shared_data, pool):
    rows = load_math500(shared_data / "math500", limit=16)
    answers = [ex.answer for ex in rows]
    boxed = [f"Thus the answer is $\\boxed{{{a}}}$." for a in answers]
    solutions = [ex.columns["solution"] for ex in rows]
    assert math_reward(None, boxed, answers, pool=pool) == [1.0] * 16
    assert math_reward(None, solutions, answers, pool=pool) == [1.0] * 16
    shifted = boxed[1:] + boxed[:1]
    expected = [
        1.0 if a == b else -1.0 for a, b in zip(answers, answers[1:] + answers[:1], strict=True)
    ]
    assert math_reward(None, shifted, answers, pool=pool, scale="01") == [
        1.0 if e > 0 else 0.0 for e in expected
    ]


def test_math_reward_equivalent_forms(pool):
    forms = [
        "\\boxed{\\frac12}",
        "\\boxed{0.5}",
        "\\boxed{\\frac{1}{2}}",
        "\\boxed{\\dfrac{1}{2}}",
        "\\boxed{1/2}",
        "the answer is $\\frac{1}{2}$",
    ]
    assert math_reward(None, forms, ["\\frac{1}{2}"] * len(forms), pool=pool) == [1.0] * len(forms)
    assert math_reward(None, forms, ["0.5"] * len(forms), pool=pool) == [1.0] * len(forms)
    wrong = ["\\boxed{\\frac13}", "\\boxed{0.51}", "\\boxed{2}", "\\boxed{\\frac{2}{1}}"]
    assert math_reward(None, wrong, ["\\frac{1}{2}"] * 4, pool=pool) == [-1.0] * 4
    sym = ["\\boxed{q - p}", "\\boxed{-q+p}"]
    assert math_reward(None, sym, ["p - q"] * 2, pool=pool) == [-1.0, 1.0]


def test_math_reward_malformed(pool):
    malformed = [
        "",
        "   ",
        "}}}{{\\boxed{",
        "\\boxed{}",
        "\\boxed{\\frac{}{",
        "$$$$",
        None,
        "\\x00\x00\ud800",
    ]
    assert math_reward(None, malformed, ["3"] * len(malformed), pool=pool, scale="01") == [
        0.0
    ] * len(malformed)
    assert math_reward(None, [], [], pool=pool) == []


def test_math_reward_slow_completions_bounded(fast_pool):
    answers = ["18"] * len(SLOW)
    start = time.monotonic()
    rewards = math_reward(None, [*SLOW, "\\boxed{18}"], [*answers, "18"], pool=fast_pool)
    elapsed = time.monotonic() - start
    assert rewards == [-1.0] * len(SLOW) + [1.0]
    # two workers, each item bounded by TIMEOUT, plus a worker restart or two
    assert elapsed < len(SLOW) / 2 * TIMEOUT + 2 * TIMEOUT + 2.0, elapsed
    assert math_reward(None, ["\\boxed{18}"], ["18"], pool=fast_pool) == [1.0]  # still works


def test_pool_hard_timeout_kills_and_replaces(bare_pool):
    bare_pool.verify(["$1$"], ["$1$"])  # warm up: a ready worker
    before = bare_pool.num_timeouts
    pid = bare_pool.worker_pids()[0]
    start = time.monotonic()
    assert bare_pool.verify(["$\\boxed{1}$"], [NESTED]) == [False]
    assert time.monotonic() - start < bare_pool.timeout + 1.5
    assert bare_pool.num_timeouts == before + 1
    assert bare_pool.worker_pids()[0] != pid
    with pytest.raises(ProcessLookupError):  # the stuck worker is gone, not left running
        os.kill(pid, 0)
    assert bare_pool.verify(["$\\boxed{2}$"], ["$\\boxed{2}$"]) == [True]


def _kill_and_wait(pid):
    """SIGKILL a worker and wait until it is a zombie (dead, not yet reaped by the pool)."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return
        time.sleep(0.01)
    raise AssertionError(f"worker {pid} did not die")


def test_pool_survives_worker_crash(bare_pool):
    bare_pool.verify(["$1$"], ["$1$"])
    _kill_and_wait(bare_pool.worker_pids()[0])  # died while idle: the item goes to a new worker
    assert bare_pool.verify(["$\\boxed{2}$"], ["$\\boxed{2}$"]) == [True]
    crashes = bare_pool.num_crashes
    assert crashes >= 1
    pid = bare_pool.worker_pids()[0]
    threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()  # dies mid-item: wrong
    start = time.monotonic()
    assert bare_pool.verify(["$\\boxed{1}$"], [NESTED]) == [False]
    assert time.monotonic() - start < bare_pool.timeout
    assert bare_pool.num_crashes == crashes + 1


def test_math_reward_from_a_thread(pool):
    out = {}
    thread = threading.Thread(
        target=lambda: out.update(r=math_reward(None, ["\\boxed{0.5}"], ["\\frac12"], pool=pool))
    )
    thread.start()
    thread.join(30)
    assert out["r"] == [1.0]


def test_pool_validation():
    with pytest.raises(ValueError, match="timeout"):
        MathVerifyPool(timeout=0)
    with pytest.raises(ValueError, match="same length"):
        MathVerifyPool(1).verify(["1"], [])
    default = default_math_pool()
    assert default is default_math_pool() and default.worker_pids() == []  # lazy


# ----------------------------------------------------------------------------- registry


def test_registry():
    assert get_reward_fn("gsm8k") is gsm8k_reward
    assert get_reward_fn("arithmetic") is arithmetic_reward
    assert get_reward_fn("math500") is math_reward and get_reward_fn("math") is math_reward
    fn = get_reward_fn("gsm8k", scale="01")
    assert fn(None, ["\\boxed{1}", "\\boxed{2}"], ["1", "1"]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="unknown reward"):
        get_reward_fn("nope")
