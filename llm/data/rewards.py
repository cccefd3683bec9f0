"""Verifiable rewards: r(y) = `correct` if the final answer matches the reference, else `incorrect`.

Contract: `fn(prompts, completions, **columns) -> list[float]`, one reward per completion;
each column (e.g. `answer`, the reference final answer) is a list aligned with `completions`
(the trainer repeats a prompt's columns for its G samples). Columns a function does not use
are ignored. Rewards are +1/-1 by default (the paper's), `scale="01"` gives 0/1, and
`correct=`/`incorrect=` set any pair. Malformed output is a wrong answer, never an exception:
any str completion is scored, whatever it holds (a 1 MB runaway generation, huge numbers,
deeply nested braces, NUL bytes), in time linear in its length (math_reward: bounded by the
pool's timeout); a non-str entry (None) scores as wrong.

What counts as correct (accuracy) is the contract of `llm.data.verifiable`: the trainer's
built-in rewards are `verifiable_reward(name, scale=...)`, a `VerifiableReward`.

Answer extraction (`extract_answer`): the content of the last balanced \\boxed{...} (or
\\fbox), else the text after the last "####", else the last number in the text.

- `gsm8k_reward`: numbers compared exactly as fractions ("1,234", "$18.00", "\\frac{1}{2}",
  "1.5e3"); a number past `MAX_DIGITS` significant digits or `MAX_EXPONENT` does not parse.
- `arithmetic_reward`: strict: the boxed answer, or else the completion's first line, must be
  one integer equal to the reference (no credit for a number buried in text).
- `math_reward`: math-verify (symbolic/numeric equivalence: \\frac12 = 0.5 = \\frac{1}{2}).
  It runs in `llm.data.math_verify_pool.MathVerifyPool` (worker subprocesses with a hard
  per-item timeout: an item that hangs or kills its worker scores as wrong).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from fractions import Fraction

from llm.data.math_verify_pool import MathVerifyPool, default_math_pool
from llm.data.verifiable import (
    REWARD_SCALES,
    RewardFn,
    VerifiableReward,
    correctness,
    reward_levels,
)

__all__ = [
    "REWARD_FNS",
    "REWARD_SCALES",
    "RewardFn",
    "VerifiableReward",
    "arithmetic_reward",
    "correctness",
    "extract_answer",
    "get_reward_fn",
    "gsm8k_reward",
    "math_reward",
    "parse_number",
    "reward_levels",
    "verifiable_reward",
]


def _check_columns(completions: Sequence[str], **columns: Sequence) -> None:
    if isinstance(completions, (str, bytes)):
        raise TypeError(
            f"completions must be a list of strings, got a single {type(completions).__name__}"
        )
    if not hasattr(completions, "__len__"):
        raise TypeError(f"completions must be a list of strings, got {type(completions).__name__}")
    for name, column in columns.items():
        if not isinstance(column, (str, bytes)) and not hasattr(column, "__len__"):
            raise TypeError(
                f"column {name!r} must be a list aligned with completions, "
                f"got {type(column).__name__}"
            )
        if isinstance(column, (str, bytes)) or len(column) != len(completions):
            got = "a str" if isinstance(column, (str, bytes)) else f"length {len(column)}"
            raise ValueError(
                f"column {name!r} must be a list aligned with completions "
                f"(length {len(completions)}), got {got}"
            )


# ----------------------------------------------------------------------------- extraction
# Completions are untrusted and may be huge (a runaway generation, a 1 MB string), so every
# helper below is linear-time in the text and never raises on a str: regexes without nested
# quantifiers, one pass for brace matching, and numbers bounded before they become ints.

# Longest number (significant digits) and largest |exponent| parsed; past them a number does
# not parse (a wrong answer). MAX_DIGITS stays below the smallest limit Python allows for
# int(str) (sys.set_int_max_str_digits, 640), so int() never raises, whatever the setting.
MAX_DIGITS = 600
MAX_EXPONENT = 1000

_BOXED = re.compile(r"\\(?:boxed|fbox)\b")
_BRACES = re.compile(r"[{}]")
_SPACES = re.compile(r" *")
_TOKEN = re.compile(r"[^\s$]+")
_NUMBER = re.compile(r"-?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:[eE][+-]?\d+)?")
_DECIMAL = re.compile(r"(-?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?")
_INTEGER = re.compile(r"\s*([+-]?)(\d+)\s*")


def _matching_braces(text: str) -> dict[int, int]:
    """{index of "{": index of its matching "}"} for every balanced pair, in one pass."""
    stack: list[int] = []
    pairs: dict[int, int] = {}
    for match in _BRACES.finditer(text):
        if match.group() == "{":
            stack.append(match.start())
        elif stack:
            pairs[stack.pop()] = match.start()
    return pairs


def last_boxed(text: str) -> str | None:
    r"""Content of the last \boxed{...} with balanced braces (or `\boxed 5`), else None."""
    if not isinstance(text, str):
        return None
    pairs = None  # computed on first need
    for match in reversed(list(_BOXED.finditer(text))):
        i = _SPACES.match(text, match.end()).end()
        if i < len(text) and text[i] == "{":
            if pairs is None:
                pairs = _matching_braces(text)
            j = pairs.get(i)
            if j is not None:
                return text[i + 1 : j].strip()
        elif i > match.end():  # "\boxed 5": one token after a space
            token = _TOKEN.match(text, i)
            if token:
                return token.group(0)
    return None


def extract_answer(text: str, *, hash_marker: bool = True, last_number: bool = True) -> str | None:
    """Final answer of a completion: last \\boxed{}, else after the last "####", else the last
    number (each fallback can be switched off). None when nothing is found."""
    if not isinstance(text, str):
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    if hash_marker and "####" in text:
        after = text.rsplit("####", 1)[1].strip()
        if after:
            return after.splitlines()[0].strip()
    if last_number:
        numbers = _NUMBER.findall(text)
        if numbers:
            return numbers[-1]
    return None


def _bounded_int(digits: str) -> int | None:
    """int of a string of decimal digits, None past MAX_DIGITS significant digits."""
    digits = digits.lstrip("0")
    if len(digits) > MAX_DIGITS:
        return None
    return int(digits) if digits else 0


def _decimal(text: str) -> Fraction | None:
    """Exact value of "-12.50", ".5", "1,234", "3e-2"; None if malformed or out of bounds.

    Never calls Fraction(str), which would expand "1e999999999" into a billion-digit int."""
    match = _DECIMAL.fullmatch(text.replace(",", ""))
    if match is None:
        return None
    sign, whole, frac, exp = match.groups()
    frac = (frac or "").rstrip("0")
    if not (whole or match.group(3)):
        return None  # "", "-", "e5"
    whole = whole.lstrip("0")
    if len(whole) + len(frac) > MAX_DIGITS:  # also bounds 10**len(frac) below
        return None
    mantissa = int(whole + frac or "0")
    power = -len(frac)
    if exp:
        digits = exp.lstrip("+-").lstrip("0")
        if len(digits) > len(str(MAX_EXPONENT)):
            return None
        exponent = int(digits or "0") * (-1 if exp.startswith("-") else 1)
        if abs(exponent) > MAX_EXPONENT:
            return None
        power += exponent
    if mantissa == 0:
        return Fraction(0)
    value = Fraction(mantissa * 10**power) if power >= 0 else Fraction(mantissa, 10**-power)
    return -value if sign else value


def _ratio(num: str, den: str) -> Fraction | None:
    """num/den for two integer strings (optionally signed); None if out of bounds or den 0."""
    n = _bounded_int(num.lstrip("-"))
    d = _bounded_int(den.lstrip("-"))
    if n is None or not d:
        return None
    return Fraction(n, d) * (-1 if num.startswith("-") else 1) * (-1 if den.startswith("-") else 1)


_LATEX_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_FRAC = re.compile(
    r"^(-?)\\[dt]?frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(-?\d+)\s*\}$|^(-?)\\[dt]?frac(\d)(\d)$"
)


def parse_number(text: str | None, *, strict: bool = False) -> Fraction | None:
    """Exact value of a numeric answer: "1,234", "$18.00", "-3", "50%", "1/2", "\\frac{1}{2}",
    "1.5e3".

    strict=False falls back to the last number inside the text ("18 dollars" -> 18);
    strict=True accepts only a text that is one number. None when nothing parses, including
    numbers past MAX_DIGITS significant digits or |exponent| > MAX_EXPONENT.
    """
    if not isinstance(text, str):
        return None
    s = _LATEX_WRAPPERS.sub(r"\1", text)
    s = re.sub(r"\\[!,;: ]|\\\$|\$|\\%|%|\\left|\\right", "", s)
    s = re.sub(r"(?<=\d),(?=\d)", "", s).strip().rstrip(".").strip()
    if re.fullmatch(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", s):
        return _decimal(s)
    frac = _FRAC.match(s)
    if frac:
        sign, num, den = (frac.group(1), frac.group(2), frac.group(3))
        if num is None:
            sign, num, den = frac.group(4), frac.group(5), frac.group(6)
        value = _ratio(num, den)
        return None if value is None else -value if sign else value
    ratio = re.fullmatch(r"(-?\d+)\s*/\s*(-?\d+)", s)
    if ratio:
        return _ratio(ratio.group(1), ratio.group(2))
    if strict:
        return None
    numbers = _NUMBER.findall(s)
    return _decimal(numbers[-1]) if numbers else None


def _parse_int(text: str, *, allow_plus: bool = False) -> int | None:
    """The integer a text is ("19", " -7 \\n"), else None; bounded like parse_number."""
    match = _INTEGER.fullmatch(text)
    if match is None or (match.group(1) == "+" and not allow_plus):
        return None
    value = _bounded_int(match.group(2))
    return None if value is None else -value if match.group(1) == "-" else value


# ----------------------------------------------------------------------------- simple rewards


def gsm8k_reward(
    prompts: Sequence,
    completions: Sequence[str],
    answer: Sequence[str],
    *,
    scale: str = "pm1",
    correct: float | None = None,
    incorrect: float | None = None,
    **columns,
) -> list[float]:
    """GSM8K: the completion's final answer (`extract_answer`) equals the reference number.

    `answer` holds final answers ("18"); a full GSM8K solution ("... #### 18") works too.
    """
    _check_columns(completions, answer=answer)
    hi, lo = reward_levels(scale, correct, incorrect)
    rewards = []
    for completion, ref in zip(completions, answer, strict=True):
        gold = parse_number(extract_answer(str(ref), last_number=False) or str(ref), strict=True)
        pred = parse_number(extract_answer(completion))
        rewards.append(hi if gold is not None and pred is not None and pred == gold else lo)
    return rewards


def arithmetic_reward(
    prompts: Sequence,
    completions: Sequence[str],
    answer: Sequence[str],
    *,
    scale: str = "pm1",
    correct: float | None = None,
    incorrect: float | None = None,
    **columns,
) -> list[float]:
    """Synthetic arithmetic: the boxed answer, or else the first line of the completion, is
    exactly one integer equal to `answer` ("19", " 19\\n..." score; "19abc", "1 9" do not)."""
    _check_columns(completions, answer=answer)
    hi, lo = reward_levels(scale, correct, incorrect)
    rewards = []
    for completion, ref in zip(completions, answer, strict=True):
        ok = False
        if isinstance(completion, str):
            boxed = last_boxed(completion)
            lines = completion.strip().splitlines()
            pred = _parse_int(boxed if boxed is not None else (lines[0] if lines else ""))
            gold = _parse_int(str(ref), allow_plus=True)
            ok = pred is not None and pred == gold
        rewards.append(hi if ok else lo)
    return rewards


# ----------------------------------------------------------------------------- math-verify


def math_reward(
    prompts: Sequence,
    completions: Sequence[str],
    answer: Sequence[str],
    *,
    scale: str = "pm1",
    correct: float | None = None,
    incorrect: float | None = None,
    pool: MathVerifyPool | None = None,
    **columns,
) -> list[float]:
    """MATH / MATH-500: math-verify equivalence of the completion's last \\boxed{} answer (or,
    without one, whatever math-verify extracts from the text) with the reference `answer`."""
    _check_columns(completions, answer=answer)
    hi, lo = reward_levels(scale, correct, incorrect)
    golds, preds, valid = [], [], []
    for completion, ref in zip(completions, answer, strict=True):
        ok = isinstance(completion, str) and bool(completion.strip())
        boxed = last_boxed(completion) if ok else None
        valid.append(ok)
        golds.append("$\\boxed{" + str(ref) + "}$")
        preds.append("$\\boxed{" + boxed + "}$" if boxed is not None else str(completion))
    idx = [i for i, ok in enumerate(valid) if ok]
    verdicts = (pool or default_math_pool()).verify(
        [golds[i] for i in idx], [preds[i] for i in idx]
    )
    good = {i for i, v in zip(idx, verdicts, strict=True) if v}
    return [hi if i in good else lo for i in range(len(completions))]


# ----------------------------------------------------------------------------- registry

REWARD_FNS: dict[str, RewardFn] = {
    "gsm8k": gsm8k_reward,
    "math": math_reward,
    "math500": math_reward,
    "arithmetic": arithmetic_reward,
}


def get_reward_fn(name: str, **kwargs) -> RewardFn:
    """Reward function by name (gsm8k, math, math500, arithmetic); kwargs are bound to it
    (e.g. scale="01", pool=...)."""
    if name not in REWARD_FNS:
        raise ValueError(f"unknown reward {name!r}; expected one of {', '.join(REWARD_FNS)}")
    fn = REWARD_FNS[name]
    return functools.partial(fn, **kwargs) if kwargs else fn


def verifiable_reward(name: str, **kwargs) -> VerifiableReward:
    """The named reward (gsm8k, math, math500, arithmetic) as a `VerifiableReward` (kwargs:
    scale, correct, incorrect, and the function's own, e.g. pool=...)."""
    if name not in REWARD_FNS:
        raise ValueError(f"unknown reward {name!r}; expected one of {', '.join(REWARD_FNS)}")
    return VerifiableReward(REWARD_FNS[name], **kwargs)
