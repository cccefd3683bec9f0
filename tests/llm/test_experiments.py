"""The off-policy sweep pipeline (splits -> warm start -> lr choice -> runs -> report)."""

import json
import pathlib
import re

import numpy as np
import pytest

from llm.data.datasets import Example
from llm.experiments import offpolicy_sweep as sweep
from llm.experiments import report
from llm.experiments.splits import SPLITS, disjoint_splits
from llm.experiments.stats import bootstrap_ci, mean_ci
from llm.sft import sft_batch

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_sft_batch_masks_exactly_the_completion_targets():
    tokens, mask = sft_batch([[1, 5, 6], [1, 7]], [[30, 2], [31, 32, 2]], length=6, pad_id=0)
    np.testing.assert_array_equal(tokens, [[1, 5, 6, 30, 2, 0], [1, 7, 31, 32, 2, 0]])
    # mask[t] = 1 where tokens[t + 1] is a completion token
    np.testing.assert_array_equal(mask, [[0, 0, 1, 1, 0], [0, 1, 1, 1, 0]])
    with pytest.raises(ValueError, match="prompt \\+ completion"):
        sft_batch([[1, 2, 3]], [[4, 5]], length=4, pad_id=0)


def test_tiny_arith_splits_are_disjoint():
    """The four splits of the real preset share no problem (and have the promised sizes)."""
    splits = sweep.make_splits(sweep.TINY_ARITH)
    assert set(splits) == set(SPLITS)
    prompts = {k: {ex.prompt for ex in v} for k, v in splits.items()}
    for name, exs in splits.items():
        assert len(prompts[name]) == len(exs), f"{name} repeats a problem"
    names = list(prompts)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not prompts[a] & prompts[b], (a, b)
    sizes = sweep.TINY_ARITH.split_sizes
    assert len(splits["test"]) == sizes["test"] >= 500
    assert len(splits["sft_train"]) > 1000


def test_disjoint_splits_errors():
    pool = [Example(f"{i}+0=", str(i)) for i in range(5)] * 3
    with pytest.raises(ValueError, match="need 6 distinct problems, there are 5"):
        disjoint_splits(pool, {"a": 3, "b": 3}, seed=0)
    with pytest.raises(ValueError, match="at most one split"):
        disjoint_splits(pool, {"a": None, "b": None}, seed=0)


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_data():
    rng = np.random.default_rng(0)
    small = (rng.random((3, 50)) < 0.3).astype(float)
    large = (rng.random((3, 2000)) < 0.3).astype(float)
    s, lg = mean_ci(small), mean_ci(large)
    assert s["lo"] <= s["mean"] <= s["hi"] and lg["lo"] <= lg["mean"] <= lg["hi"]
    assert lg["hi"] - lg["lo"] < s["hi"] - s["lo"]
    assert bootstrap_ci(np.zeros(10)) == (0.0, 0.0)
    with pytest.raises(ValueError, match="shape"):
        bootstrap_ci(np.zeros((2, 2, 2)))


def test_collapse_step():
    acc = [0.4] * 10 + [0.5] * 10 + [0.1] * 10
    # the 5-step average first drops below 0.5 * 0.4 at index 23 (0.5, 0.1 x 4 -> 0.18)
    assert report.collapse_step(acc, 5) == 24
    assert report.collapse_step([0.4 + 0.01 * i for i in range(30)], 5) is None


def _interval(mean):
    return {
        "bootstrap": {"mean": mean, "lo": mean - 0.1, "hi": mean + 0.1},
        "t_over_seeds": {"mean": mean, "lo": mean - 0.2, "hi": mean + 0.2},
    }


# the fields two compared runs may differ in; everything else (lr, steps, P, G, temperature,
# evaluation...) is shared by construction
KNOBS = ("loss", "delta_v", "refresh_every")


@pytest.mark.parametrize("name", sorted(sweep.PRESETS))
def test_every_preset_can_test_the_claim(name):
    """What the claim needs, derived from each preset's runs rather than restated: AsymRE
    deltas of both signs at every stale N, an on-policy control, GRPO at the stale N; each
    contrast between two configs that differ in one knob, through the real TrainConfigs; the
    stale policy refreshed within the run; every pre-registered target computable."""
    preset = sweep.PRESETS[name]
    specs = sweep.run_specs(preset)
    assert len({s.name for s in specs}) == len(specs)
    asym = [s for s in specs if s.loss == "asymre"]
    stale = sorted({s.refresh_every for s in asym if s.refresh_every > 1})
    assert preset.refresh_every in stale
    for n in stale:
        dvs = [s.delta_v for s in asym if s.refresh_every == n]
        assert min(dvs) < 0 <= max(dvs), f"N={n} needs delta_v of both signs, has {dvs}"
        assert preset.num_steps // n >= 2, f"N={n} never refreshes the behaviour policy"
    assert any(s.refresh_every == 1 for s in asym), "no on-policy control"
    if preset.grpo:
        assert [s.refresh_every for s in specs if s.loss == "grpo"] == [preset.refresh_every]

    pairs = report.contrast_pairs(specs)
    seed, lr = preset.seeds[0], 3e-4
    for label, (a, b) in pairs.items():
        changed = [k for k in KNOBS if getattr(a, k) != getattr(b, k)]
        assert len(changed) == 1 or changed == ["loss", "delta_v"], (label, changed)
        cfg_a, cfg_b = (
            sweep.train_config(preset, "model", s, seed, lr, f"out/{s.name}").to_dict()
            for s in (a, b)
        )
        differ = {k for k in cfg_a if cfg_a[k] != cfg_b[k]}
        assert differ == set(changed) | {"out_dir"}, (label, differ)
    for kind in ("δV=+0.1 minus δV=-0.1", "N=", "minus GRPO"):
        assert any(kind in label for label in pairs), f"no {kind!r} contrast"

    # every target the report pre-registers finds its runs among this preset's
    configs = {
        s.name: {
            "loss": s.loss, "delta_v": s.delta_v, "refresh_every": s.refresh_every,
            "collapsed_seeds": 0, "seeds": list(preset.seeds), "greedy_change": _interval(0.2),
        }
        for s in specs
    }  # fmt: skip
    contrasts = {label: {"greedy_auc": _interval(-0.5)} for label in pairs}
    assert len(report.targets(preset, configs, contrasts)) == 4
    # --quick runs the same configurations on the same splits
    assert sweep.run_specs(preset.quick()) == specs
    assert preset.quick().split_sizes == preset.split_sizes


def test_tiny_arith_runs_are_the_pre_registered_ones():
    """results/llm_tiny/README.md pre-registers the runs before any result: the preset must
    still make exactly those (a changed preset would no longer be the registered study)."""
    text = (REPO / "results" / "llm_tiny" / "README.md").read_text()
    runs = re.search(
        r"δV in \{(.+?)\} x N in \{(.+?)\}.+?GRPO at N = (\d+); seeds ([\d, ]+)", text, re.S
    )
    assert runs, "the README's **Runs.** sentence changed: update this parser with it"
    dvs, ns = ({float(x) for x in g.split(",")} for g in runs.group(1, 2))
    grpo_n, seeds = int(runs.group(3)), [int(x) for x in runs.group(4).split(",")]
    specs = sweep.run_specs(sweep.TINY_ARITH)
    asym = {(s.delta_v, s.refresh_every) for s in specs if s.loss == "asymre"}
    assert asym == {(dv, int(n)) for dv in dvs for n in ns}
    assert [s.refresh_every for s in specs if s.loss == "grpo"] == [grpo_n]
    assert list(sweep.TINY_ARITH.seeds) == seeds
    total = re.search(r"(\d+) runs\.", text)
    assert total and int(total.group(1)) == len(specs) * len(seeds)


def test_contrast_pairs_are_the_ones_the_claim_needs():
    pairs = report.contrast_pairs(sweep.run_specs(sweep.TINY_ARITH))
    names = {label: (a.name, b.name) for label, (a, b) in pairs.items()}
    assert names["δV=+0.1 minus δV=-0.1, N=100"] == ("asymre_dv+0.10_N100", "asymre_dv-0.10_N100")
    assert names["N=25 minus N=1, δV=-0.1"] == ("asymre_dv-0.10_N25", "asymre_dv-0.10_N1")
    assert names["AsymRE δV=-0.1 minus GRPO, N=25"] == ("asymre_dv-0.10_N25", "grpo_N25")
    assert len(pairs) == 4 + 6 + 1  # per N, stale vs on-policy per (delta_v, N > 1), GRPO


def test_targets_need_both_intervals_below_zero():
    def iv(lo, hi, t=True):
        return {
            "bootstrap": {"mean": (lo + hi) / 2, "lo": lo, "hi": hi},
            "t_over_seeds": {"mean": (lo + hi) / 2, "lo": lo - 0.1, "hi": hi + 0.1} if t else None,
        }

    label = "δV=+0.1 minus δV=-0.1, N=100"
    met = report.targets(sweep.TINY_ARITH, {}, {label: {"greedy_auc": iv(-0.4, -0.2)}})
    assert met[0]["met"] is True
    wide = report.targets(sweep.TINY_ARITH, {}, {label: {"greedy_auc": iv(-0.4, -0.05)}})
    assert wide[0]["met"] is False  # the t interval reaches above 0
    one_seed = report.targets(sweep.TINY_ARITH, {}, {label: {"greedy_auc": iv(-0.4, -0.2, False)}})
    assert one_seed[0]["met"] is False


@pytest.mark.slow
def test_smoke_pipeline_end_to_end(tmp_path):
    preset = sweep.SMOKE
    summary = sweep.run_sweep(preset, tmp_path, progress=False)
    specs = sweep.run_specs(preset)
    assert (tmp_path / "warm_start" / "config.json").is_file()
    splits = json.loads((tmp_path / "splits.json").read_text())
    assert all(v == 0 for v in splits["overlaps"].values())
    for spec in specs:
        for seed in preset.seeds:
            run_dir = tmp_path / "runs" / spec.name / f"seed{seed}"
            rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
            assert [r["step"] for r in rows] == list(range(preset.num_steps))
            with np.load(run_dir / "evals.npz") as ev:
                assert list(ev["steps"]) == [0, 2, 4]  # step 0, then every eval_every
                assert ev["sampled"].shape == (3, 16, preset.eval_samples)
    keys = {
        "name",
        "loss",
        "delta_v",
        "refresh_every",
        "seed",
        "heldout_step0",
        "heldout_final",
        "heldout_final_mean_at_k",
        "collapsed_step",
    }
    assert len(summary["runs"]) == len(specs) * len(preset.seeds)
    assert all(keys <= set(r) for r in summary["runs"])
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["runs"] == json.loads(json.dumps(summary["runs"]))
    assert summary["learning_rate"]["chosen"] in preset.learning_rates
    assert "sft_val" in summary["learning_rate"]["scored_on"]
    # step 0 is the same warm start for every run, scored with the same key
    assert len({r["heldout_step0"] for r in summary["runs"]}) == 1
    for name in ("heldout_and_train.png", "dose_response.png"):
        png = (tmp_path / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    md = (tmp_path / "summary.md").read_text()
    assert "| AsymRE δV=-0.1, N=2 | 2 |" in md and "| AsymRE δV=+0.1, N=1 | 1 |" in md
    assert set(summary["contrasts"]) == {
        "δV=+0.1 minus δV=-0.1, N=1",
        "δV=+0.1 minus δV=-0.1, N=2",
        "N=2 minus N=1, δV=-0.1",
        "N=2 minus N=1, δV=+0.1",
        "AsymRE δV=-0.1 minus GRPO, N=2",
    }
    assert all(c["seeds"] == [0, 1] and c["collapsed_seeds"] <= 2 for c in summary["configs"])
    for c in summary["contrasts"].values():  # two seeds: both interval methods exist
        assert c["seeds"] == [0, 1] and c["greedy_auc"]["t_over_seeds"] is not None
    assert [t["target"][:22] for t in summary["targets"]] == [
        "δV=+0.1 ends below δV=",
        "on-policy (N=1) δV=+0.",
        "AsymRE δV=-0.1 never c",
        "AsymRE δV=-0.1 at N=2 ",
    ]
    # a second call reuses the warm start and the finished runs
    mtime = (tmp_path / "warm_start" / "model.safetensors").stat().st_mtime_ns
    again = sweep.run_sweep(preset, tmp_path, progress=False)
    assert (tmp_path / "warm_start" / "model.safetensors").stat().st_mtime_ns == mtime
    assert again["seconds"]["trained_now"] == [] and again["runs"] == summary["runs"]
    assert again["seconds"]["runs"] == summary["seconds"]["runs"]  # kept from the first call


@pytest.mark.slow
def test_quick_cli_runs_the_same_protocol(tmp_path, capsys):
    """`python -m llm.experiments.offpolicy_sweep --quick` (on the smoke preset): one seed,
    fewer steps, and still step-0 evaluation, the lr choice and the summary."""
    sweep.main(["--preset", "smoke", "--quick", "--out", str(tmp_path), "--no-progress"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["seeds"] == [0] and summary["num_steps"] == sweep.SMOKE.quick_steps
    assert summary["learning_rate"]["chosen"] in sweep.SMOKE.learning_rates
    assert "pass@4" in summary["step0"]
    assert "sweep done in" in capsys.readouterr().out
