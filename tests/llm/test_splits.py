"""Splits disjoint by problem: commuted forms share a canonical key, and no key crosses
splits on the real presets."""

import pytest

from llm.data.datasets import Example
from llm.experiments import offpolicy_sweep as sweep
from llm.experiments.presets import PRESETS
from llm.experiments.splits import canonical_key, disjoint_splits


def _key(text: str, **columns) -> str:
    return canonical_key(Example(text, "0", columns))


def test_commuted_forms_share_a_key_and_different_problems_do_not():
    assert _key("12+7=") == _key("7+12=")
    assert _key("3*4+5=") == _key("5+4*3=") == _key("5+3*4=")
    assert _key("10-3+2=") == _key("2+10-3=")
    assert _key("10-3=") != _key("3-10=")
    assert _key("10-2+3=") != _key("10-3+2=")
    assert _key("12+7=") != _key("12*7=")
    # the expression column wins over a natural-language prompt
    assert _key("What is 7 + 12?", expression="7+12") == _key("12+7=")
    assert _key("What is 7 + 12?") != _key("12+7=")


def test_disjoint_splits_keep_one_form_per_problem():
    pool = [Example(f"{a}+{b}=", str(a + b)) for a in range(4) for b in range(4)]
    parts = disjoint_splits(pool, {"x": 4, "y": None}, seed=0)
    keys = [canonical_key(ex) for part in parts.values() for ex in part]
    assert len(keys) == len(set(keys)) == 10  # 4 * 5 / 2 unordered pairs


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_no_canonical_key_crosses_splits_on_the_real_presets(name):
    splits = sweep.make_splits(PRESETS[name])
    keys = {k: [canonical_key(ex) for ex in v] for k, v in splits.items()}
    for split, ks in keys.items():
        assert len(ks) == len(set(ks)), f"{split} repeats a problem"
    names = list(keys)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not set(keys[a]) & set(keys[b]), (name, a, b)
