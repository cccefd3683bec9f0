"""``python -m asymre_jax.demo``: the printed tour agrees with the library it shows."""

import re

from asymre_jax import demo


def test_demo_prints_the_loss_and_a_shrinking_support(capsys):
    demo.main()
    out = capsys.readouterr().out
    assert "advantages (dv=-0.1)" in out and "d loss / d logprob = -A / B" in out
    rows = re.findall(r"^\s+(-?\d+\.\d+)\s+(\d+)\s+(\d+\.\d+)$", out, flags=re.M)
    assert len(rows) == 7
    supports = [int(size) for _, size, _ in rows]
    # theory: the support of the limit policy shrinks to one arm as V -> V^mu
    assert supports == sorted(supports, reverse=True) and supports[-1] == 1 < supports[0]
