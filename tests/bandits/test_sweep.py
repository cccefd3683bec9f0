"""sweep(): grid layout, common random numbers vs independent streams, save/load, CLI."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from bandits import BanditProblem, make_problem, simulate
from bandits.cli import main
from bandits.sweep import SweepResult, _shard_grid_axis, _sweep_jit, sweep

SAMPLED = dict(steps_per_round=6, num_rounds=2, batch_size=8)


@pytest.fixture(scope="module")
def problem():
    return make_problem(jax.random.key(3), num_arms=10, noise="gaussian", noise_std=0.2)


def test_grid_layout_and_cells_match_simulate(problem):
    Vs, lrs = [0.1, 0.4, 0.6], [0.5, 1.0]
    res = sweep(problem, V=Vs, lr=lrs, num_seeds=2, seed=5, **SAMPLED)
    assert res.dims == ("V", "lr", "seed")
    assert res.data["expected_reward"].shape == (3, 2, 2, 12)
    assert res.data["final_policy"].shape == (3, 2, 2, 10)
    assert res.data["behaviour_value"].shape == (3, 2, 2, 2)
    np.testing.assert_allclose(res.coords["V"], Vs)
    seed_keys = jax.random.split(jax.random.key(5), 2)
    single = simulate(problem, V=Vs[2], lr=lrs[1], key=seed_keys[1], **SAMPLED)
    np.testing.assert_allclose(
        res.data["expected_reward"][2, 1, 1], single.expected_reward, rtol=1e-5, atol=1e-6
    )


def test_common_random_numbers_share_noise_and_independent_streams_do_not(problem):
    twice = [0.3, 0.3]
    crn = sweep(problem, V=twice, lr=[1.0, 1.0], num_seeds=2, crn=True, **SAMPLED)
    ind = sweep(problem, V=twice, lr=[1.0, 1.0], num_seeds=2, crn=False, **SAMPLED)
    r_crn, r_ind = crn.data["expected_reward"], ind.data["expected_reward"]
    np.testing.assert_array_equal(r_crn[0], r_crn[1])  # same seed, same draws
    np.testing.assert_array_equal(r_crn[:, 0], r_crn[:, 1])
    assert not np.allclose(r_ind[0], r_ind[1])
    assert not np.allclose(r_ind[:, 0], r_ind[:, 1])
    assert not np.allclose(r_crn[..., 0, :], r_crn[..., 1, :])  # seeds differ in both modes
    # an independent cell is simulate() with the cell index folded into the seed key
    seed_key = jax.random.split(jax.random.key(0), 2)[1]
    single = simulate(problem, V=0.3, key=jax.random.fold_in(seed_key, 1 * 2 + 0), **SAMPLED)
    np.testing.assert_allclose(r_ind[1, 0, 1], single.expected_reward, rtol=1e-5, atol=1e-6)


def test_relative_grid_and_batch_baseline():
    problem = make_problem(jax.random.key(0), num_arms=8, noise="bernoulli")
    res = sweep(problem, delta_v=[-0.2, 0.0], baseline="batch", num_seeds=3, **SAMPLED)
    assert res.dims[0] == "delta_v"
    # round 0 behaviour value is the initial policy's for every cell
    np.testing.assert_allclose(res.data["behaviour_value"][..., 0], problem.behaviour_value())
    # the batch baseline is a batch mean + delta_v, so it differs from V^mu + delta_v
    exact_V = res.data["behaviour_value"] + np.array([-0.2, 0.0])[:, None, None, None]
    assert not np.allclose(res.data["baseline"], exact_V)


@pytest.mark.slow
def test_sharded_sweep_matches_single_device(problem):
    assert len(jax.devices()) >= 4  # tests/conftest.py exposes 8 CPU devices
    assert len(_shard_grid_axis(jax.numpy.zeros(4)).sharding.device_set) == 4
    kwargs = dict(V=[0.1, 0.2, 0.3, 0.5], num_seeds=2, crn=False, **SAMPLED)
    plain = sweep(problem, **kwargs)
    sharded = sweep(problem, shard=True, **kwargs)
    for name, arr in plain.data.items():
        np.testing.assert_allclose(sharded.data[name], arr, rtol=1e-6, atol=1e-7)


def test_no_recompilation_when_only_grid_values_change(problem):
    sweep(problem, V=[0.1, 0.2], lr=[1.0], num_seeds=2, **SAMPLED)
    size = _sweep_jit._cache_size()
    sweep(problem, V=[0.5, -0.2], lr=[0.3], num_seeds=2, seed=9, **SAMPLED)
    assert _sweep_jit._cache_size() == size


def test_save_and_load_roundtrip(tmp_path):
    problem = BanditProblem([0.2, 0.9, 0.5], [0.0, 0.0, 1.0])
    res = sweep(problem, V=[0.0, 0.3], steps_per_round=50, num_rounds=2)
    npz_path, json_path = res.save(tmp_path, "grid")
    back = SweepResult.load(npz_path)
    assert back.dims == res.dims
    for name, arr in res.data.items():
        np.testing.assert_array_equal(back.data[name], arr)
    summary = json.loads(json_path.read_text())
    assert summary["config"]["num_rounds"] == 2
    assert [c["V"] for c in summary["cells"]] == pytest.approx([0.0, 0.3])
    final = res.data["expected_reward"][:, 0, 0, -1]
    assert [c["final_reward_mean"] for c in summary["cells"]] == pytest.approx(final.tolist())


def test_bad_sweep_inputs(problem):
    with pytest.raises(ValueError, match="exactly one of V"):
        sweep(problem, V=[0.1], delta_v=[0.1], steps_per_round=2)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        sweep(problem, V=[], steps_per_round=2)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        sweep(problem, V=[[0.1, 0.2]], steps_per_round=2)
    with pytest.raises(ValueError, match="lr must be finite"):
        sweep(problem, V=[0.1], lr=[float("inf")], steps_per_round=2)
    with pytest.raises(ValueError, match="num_seeds"):
        sweep(problem, V=[0.1], num_seeds=0, steps_per_round=2)
    with pytest.raises(TypeError, match="crn must be a bool"):
        sweep(problem, V=[0.1], crn="yes", steps_per_round=2)


@pytest.mark.slow  # a preset's grid and figures; the fast lane: test_cli_custom_grid and
# tests/bandits/test_plateau.py::test_preset_runs_small
def test_cli_preset_writes_figures_data_and_table(tmp_path, capsys):
    assert main(["--preset", "paper-limit", "--small", "--out", str(tmp_path)]) == 0
    for name in ("paper_limit.png", "paper_limit.npz", "paper_limit.json"):
        assert (tmp_path / name).stat().st_size > 0
    summary = json.loads((tmp_path / "summary_paper-limit.json").read_text())
    rows = summary["rows"]
    # the simulated support shrinks with V and is a single arm above V^mu, like the theory
    assert rows[0]["support"] > rows[-1]["support"] == rows[-1]["support (theory)"] == 1
    assert "support (theory)" in capsys.readouterr().out


def test_cli_custom_grid(tmp_path, capsys):
    argv = ["--V", "0.1", "0.3", "--arms", "5", "--steps-per-round", "20", "--rounds", "2"]
    argv += ["--batch-size", "4", "--seeds", "2", "--independent", "--out", str(tmp_path)]
    assert main(argv) == 0
    back = SweepResult.load(tmp_path / "sweep.npz")
    assert back.data["expected_reward"].shape == (2, 1, 2, 40)
    assert back.config["crn"] is False
    assert "final_reward_mean" in capsys.readouterr().out


@pytest.mark.slow  # two fresh processes importing jax
def test_module_entry_point_runs_cleanly_and_library_import_stays_light():
    run = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "bandits.sweep", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("usage: python -m bandits.sweep")
    assert "--preset" in run.stdout and "--delta-v" in run.stdout
    # the library module does not pull in the CLI or the presets (no import cycle)
    code = "import sys, bandits.sweep; print(sorted(m for m in sys.modules if m.startswith('bandits')))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "bandits.presets" not in run.stdout and "bandits.cli" not in run.stdout
