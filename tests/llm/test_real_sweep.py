"""The real-model sweep runs the contrasts the pre-registered claim needs (issue 17)."""

from llm.experiments.presets import PRESETS
from llm.experiments.real_sweep import comparison_specs


def test_comparison_runs_pair_with_the_stale_minus_0_1_reference():
    preset = PRESETS["smollm2-arith"]
    n = preset.refresh_every
    specs = {(s.loss, s.delta_v, s.refresh_every) for s in comparison_specs(preset)}
    assert n > 1  # the reference (the learning-rate run) is stale
    assert ("asymre", 0.1, n) in specs  # delta_v +0.1 minus -0.1 at the same N
    assert ("asymre", -0.1, 1) in specs  # stale minus on-policy at delta_v = -0.1
    assert ("asymre", 0.1, 1) in specs  # on-policy +0.1 must not collapse
    assert any(loss == "grpo" and refresh == n for loss, _, refresh in specs)  # AsymRE - GRPO
    assert len({s.name for s in comparison_specs(preset)}) == len(specs)
