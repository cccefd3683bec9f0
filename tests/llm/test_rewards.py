"""llm.data.rewards: answer extraction, the three rewards, scales, and the math-verify pool's limits."""

import functools
import os
import random
import signal
import sys
import threading
import time
from fractions import Fraction

import pytest

from llm.data.datasets import load_gsm8k, load_math500, make_arithmetic_examples
from llm.data.rewards import (
    MAX_DIGITS,
    MathVerifyPool,
    VerifiableReward,
    arithmetic_reward,
    correctness,
    default_math_pool,
    extract_answer,
    get_reward_fn,
    gsm8k_reward,
    last_boxed,
    math_reward,
    parse_number,
    reward_levels,
    verifiable_reward,
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


# ----------------------------------------------------------------------------- hostile output
# Model output is untrusted: any str completion must be scored, fast, and never raised on.

KB = 1 << 10
HOSTILE = [
    "9" * 5000,  # past Python's int(str) limit (4300 digits)
    "The answer is " + "9" * 5000 + ".",
    "\\boxed{" + "9" * 5000 + "}",
    "#### -" + "9" * 5000,
    "\\boxed{1." + "9" * 5000 + "}",
    "\\boxed{\\frac{" + "9" * 5000 + "}{3}}",
    "\\boxed{" + "9" * 5000 + "/3}",
    "\\boxed{3/" + "9" * 5000 + "}",
    "\\boxed{1e999999999}",  # Fraction("1e999999999") would build a billion-digit int
    "\\boxed{1e-999999999}",
    "\\boxed{3e99999999999999999999}",
    "\\boxed{0." + "0" * 100_000 + "3}",
    "7" * (16 * KB),
    "so 1 + 1 = 2; " * (16 * KB),
    "1," * (8 * KB),
    "\\boxed{" * (8 * KB),  # many unbalanced boxes: quadratic if each one rescans the text
    "\\boxed \n" * (8 * KB),
    "\\boxed{" + "{" * (16 * KB) + "}" * (16 * KB) + "}",  # deep nesting
    "}" * (16 * KB) + "{" * (16 * KB),
    "\\text{" * (8 * KB),
    "\\frac{1}{" * (16 * KB),
    "$" * (16 * KB),
    "-" * (16 * KB),
    "." * (16 * KB),
    "####" * (16 * KB),
    "1" + "e" * (16 * KB) + "5",
    "\x00" * (16 * KB),
    "\x00\\boxed{\x00}\x00",
    "\ud800\udfff\u202e\ufeff\u2028\x85",
    "\\boxed{\U0001d7d7}\ud800",  # a non-ASCII Unicode digit (nine)
]


# The bounds below catch super-linear scans (minutes on these inputs), not slow machines: each
# is a few times what an idle 2-core machine needs, and LOAD_SLACK more leaves room for a
# loaded one (parallel workers, other jobs) without letting a quadratic scan through.
LOAD_SLACK = 10.0


def _within(seconds):
    """Run the test in a daemon thread and fail it (rather than hang) past `seconds` times
    LOAD_SLACK."""
    seconds = seconds * LOAD_SLACK

    def decorate(test):
        @functools.wraps(test)
        def run():
            outcome = {}

            def target():
                try:
                    test()
                except BaseException as err:  # re-raised in the test's thread
                    outcome["error"] = err

            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            thread.join(seconds)
            assert not thread.is_alive(), f"{test.__name__} took more than {seconds}s"
            if "error" in outcome:
                raise outcome["error"]

        return run

    return decorate


def test_parse_number_huge_numbers_do_not_raise():
    big = "9" * 5000
    for text in (big, f"-{big}", f"{big}.5", f"0.{big}", f"\\frac{{{big}}}{{2}}", f"1/{big}"):
        assert parse_number(text) is None
    for text in (big, f"-{big}", f"{big}.5", f"0.{big}", f"1,{big}"):
        assert parse_number(f"so {text} dollars") is None  # the last-number fallback too
    assert parse_number("9" * MAX_DIGITS) == int("9" * MAX_DIGITS)  # the bound is inclusive
    assert parse_number("9" * (MAX_DIGITS + 1)) is None
    # leading zeros of the integer part and trailing zeros of the decimals are not digits
    assert parse_number("0" * 5000 + "7") == 7
    assert parse_number("7." + "0" * 5000) == 7
    assert parse_number("\\frac{" + "0" * 5000 + "1}{2}") == Fraction(1, 2)


def test_parse_number_under_the_smallest_int_str_limit():
    previous = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)  # the smallest limit Python allows
    try:
        assert parse_number("9" * MAX_DIGITS) == 10**MAX_DIGITS - 1
        assert parse_number("9" * 700) is None
        assert gsm8k_reward(None, ["\\boxed{" + "9" * 700 + "}"], ["3"]) == [-1.0]
        assert arithmetic_reward(None, ["9" * 700], ["3"]) == [-1.0]
    finally:
        sys.set_int_max_str_digits(previous)


@_within(2.0)
def test_parse_number_exponents_bounded():
    assert parse_number("1.5e3") == 1500
    assert parse_number("2.5E-2") == Fraction(1, 40)
    assert parse_number("-4e+0") == -4
    assert parse_number("about 3e2 apples") == 300
    for text in ("1e999999999", "1e-999999999", "9e99999999999999999999", "1e1001"):
        assert parse_number(text) is None
        assert parse_number(text, strict=True) is None
    assert parse_number("1e1000") == 10**1000
    assert parse_number("3e") == 3  # no exponent digits: not an exponent


def test_gsm8k_reward_huge_number_is_wrong_not_an_error():
    big = "9" * 5000
    comps = [big, f"\\boxed{{{big}}}", f"#### {big}", f"The answer is {big}.", "\\boxed{3}"]
    assert gsm8k_reward(None, comps, ["3"] * 5) == [-1.0] * 4 + [1.0]
    assert gsm8k_reward(None, comps, [big] * 5) == [-1.0] * 5  # an unparsable reference too
    # "1e999999999" is not "999999999" (the old last-number reading of the exponent)
    assert gsm8k_reward(None, ["\\boxed{1e999999999}"], ["999999999"]) == [-1.0]
    assert gsm8k_reward(None, ["\\boxed{1.5e3}", "\\boxed{1e3}"], ["1500", "1,000"]) == [1, 1]


def test_arithmetic_reward_huge_number_and_bad_reference():
    big = "9" * 5000
    comps = [big, f"\\boxed{{{big}}}", f"-{big}\nmore", "\\boxed{3}"]
    assert arithmetic_reward(None, comps, ["3"] * 4) == [-1.0] * 3 + [1.0]
    assert arithmetic_reward(None, ["3"], [big]) == [-1.0]
    # a reference that is not an integer scores every completion as wrong, like gsm8k's
    assert arithmetic_reward(None, ["3", "x"], ["three", None]) == [-1.0, -1.0]
    assert arithmetic_reward(None, ["7", "\\boxed{-2}"], [" +7 ", -2]) == [1.0, 1.0]


@_within(3.0)  # quadratic scanning takes minutes here
def test_last_boxed_linear_time():
    n = 16 * KB
    assert last_boxed("\\boxed{" * n) is None
    assert last_boxed("\\boxed{1}" + "\\boxed{" * n) == "1"
    assert last_boxed("\\boxed \n" * n) is None
    assert last_boxed("\\boxed{" + "{" * n + "x" + "}" * n + "}") == "{" * n + "x" + "}" * n
    assert last_boxed("\\boxed" + " " * n + "{2}") == "2"
    assert extract_answer("\\boxed{" * n + " #### 5") == "5"


@_within(10.0)  # a few tenths of a second when linear
def test_simple_rewards_never_raise_on_hostile_completions():
    for fn in (gsm8k_reward, arithmetic_reward):
        rewards = fn(None, HOSTILE, ["3"] * len(HOSTILE), scale="01")
        assert rewards == [0.0] * len(HOSTILE), fn.__name__
        assert fn(None, [*HOSTILE, "\\boxed{3}"], ["3"] * (len(HOSTILE) + 1))[-1] == 1.0
    for text in HOSTILE:
        for strict in (False, True):
            value = parse_number(text, strict=strict)
            assert value is None or isinstance(value, Fraction)
        assert extract_answer(text) is None or isinstance(extract_answer(text), str)


@_within(5.0)
def test_one_megabyte_completions():
    mb = "a long digression. " * (55 * KB)  # about 1 MB
    boxes = "\\boxed{" * (146 * KB)  # about 1 MB of unbalanced boxes
    comps = [mb, mb + "\\boxed{3}", "3\n" + mb, boxes]
    assert gsm8k_reward(None, comps, ["3"] * 4) == [-1.0, 1.0, 1.0, -1.0]
    assert arithmetic_reward(None, comps, ["3"] * 4) == [-1.0, 1.0, 1.0, -1.0]


@_within(10.0)
def test_simple_rewards_never_raise_fuzz():
    """Random strings over the tokens the parsers look at: scored, never raised on."""
    tokens = [
        *"0123456789{}-+.,/$%eE \n\x00",
        "\\boxed",
        "\\fbox",
        "\\frac",
        "\\dfrac",
        "\\text{",
        "\\left",
        "\\!",
        "####",
        "9" * 700,
        "e999999999",
        "\u0663",
        "\ud800",
    ]
    rng = random.Random(0)
    comps = ["".join(rng.choices(tokens, k=rng.randint(0, 16))) for _ in range(2000)]
    answers = [rng.choice(["3", "-7", "0", "1.5", "1e3", "x", "9" * 700]) for _ in comps]
    for fn in (gsm8k_reward, arithmetic_reward):
        rewards = fn(None, comps, answers, scale="01")
        assert len(rewards) == len(comps) and set(rewards) <= {0.0, 1.0}
    for text in comps:
        parse_number(text)
        parse_number(text, strict=True)
        extract_answer(text)


def test_rewards_argument_types():
    for fn in (gsm8k_reward, arithmetic_reward, math_reward):
        with pytest.raises(TypeError, match="completions"):
            fn(None, None, ["1"])
        with pytest.raises(TypeError, match="completions"):
            fn(None, b"1", ["1"])
        with pytest.raises(TypeError, match="column 'answer'"):
            fn(None, ["1"], None)
    # a non-str entry is a wrong answer, like a malformed one
    odd = [None, b"\\boxed{3}", 3, 3.0, ["3"]]
    assert gsm8k_reward(None, odd, ["3"] * len(odd)) == [-1.0] * len(odd)
    assert arithmetic_reward(None, odd, ["3"] * len(odd)) == [-1.0] * len(odd)


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


def test_math_reward_hostile_completions(fast_pool):
    comps = [
        "\\boxed{" + "9" * 5000 + "}",
        "\\boxed{" * (8 * KB),  # quadratic box scanning alone takes ~15 s here
        "a" * (64 * KB),
        "\x00" * 1000 + "\ud800\\boxed{\x00}",
        b"\\boxed{3}",
        3,
        "\\boxed{3}",
    ]
    start = time.monotonic()
    assert math_reward(None, comps, ["3"] * len(comps), pool=fast_pool) == [-1.0] * 6 + [1.0]
    # each item is bounded by the pool's timeout; two workers
    assert time.monotonic() - start < len(comps) / 2 * TIMEOUT + 2.0


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


# ----------------------------------------------------------------------------- correctness


def test_verifiable_reward_scores_like_the_function_and_says_what_is_correct():
    completions, answers = ["\\boxed{1}", "\\boxed{2}", "no"], ["1", "1", "1"]
    for scale, levels in (("pm1", [1.0, -1.0, -1.0]), ("01", [1.0, 0.0, 0.0])):
        fn = verifiable_reward("gsm8k", scale=scale)
        assert fn(None, completions, answer=answers) == levels
        assert gsm8k_reward(None, completions, answers, scale=scale) == levels
        assert correctness(fn)(levels).tolist() == [True, False, False]
    # nearest level, not float equality: a reward a rounding error off its level still counts
    fn = VerifiableReward(arithmetic_reward, correct=0.1, incorrect=-0.2)
    assert fn.is_correct([0.1 + 1e-12, 0.30000000000000004 - 0.2, -0.2]).tolist() == [
        True,
        True,
        False,
    ]
    with pytest.raises(ValueError, match="differ"):
        VerifiableReward(arithmetic_reward, correct=1.0, incorrect=1.0)


def test_plain_reward_functions_define_no_correctness():
    assert correctness(gsm8k_reward) is None
    assert correctness(functools.partial(gsm8k_reward, scale="01")) is None

    class Bad:
        def __call__(self, prompts, completions, **columns):
            return [1.0] * len(completions)

        def is_correct(self, rewards):
            return rewards  # floats, not a bool array

    with pytest.raises(ValueError, match="bool array"):
        correctness(Bad())([1.0, 0.0])
