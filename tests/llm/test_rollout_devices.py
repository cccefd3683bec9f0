"""The sampler on devices of its own (``rollout_devices``, llm.rl.rollout_devices): on the 8
CPU devices, 2 rollout + 6 learner devices give the run of a learner on the same 6 devices
that samples there too; mu really lives on the last 2 devices, the copy time is logged, and
bad values are refused naming the field."""

import jax
import numpy as np
import pytest

from llm import train as cli
from llm.errors import ConfigError
from llm.models.tiny import make_tiny_checkpoint
from llm.rl import init_run
from llm.rl.rollout_devices import split_devices, split_per_process
from llm.rl.state import refresh_behaviour
from llm.rl.step import TIMING_KEYS
from llm.trainer import TrainConfig, train

# sampled on another mesh, mu's log-probs may differ in the last bits: so may the drift
DRIFT_KEYS = ("logratio_abs", "ratio_mean", "ratio_max")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    # hidden 48 and MLP 96 divide over fsdp=3, tp=2 (learner) and fsdp=2 (sampler)
    path = tmp_path_factory.mktemp("tiny") / "llama"
    return str(make_tiny_checkpoint(path, "llama", hidden_size=48, intermediate_size=96))


def _cfg(model_path, out_dir, **kw):
    base = dict(
        model_path=model_path,
        task="arithmetic",
        task_kwargs={"num_examples": 64},
        num_steps=4,
        refresh_every=2,
        prompts_per_step=4,
        samples_per_prompt=4,
        micro_batches=2,
        max_new_tokens=6,
        delta_v=-0.5,
        learning_rate=1e-2,
        eval_prompts=0,
        mesh="fsdp=3,tp=2",
        out_dir=str(out_dir),
        progress=False,
        tensorboard=False,
    )
    return TrainConfig(**(base | kw))


def _devices_of(tree) -> set:
    return set().union(*(x.sharding.device_set for x in jax.tree.leaves(tree)))


def _run(cfg):
    """(rows, final state, [(devices of params, devices of mu, mu) after each step])."""
    seen = []

    def record(step, params, behaviour, row):
        seen.append((_devices_of(params), _devices_of(behaviour), behaviour))

    rows, state = train(cfg, callback=record, return_state=True)
    return rows, state, seen


def _exact(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMING_KEYS + DRIFT_KEYS}


def _assert_equal_trees(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _assert_same_rows(rows_a, rows_b):
    assert len(rows_a) == len(rows_b)
    for a, b in zip(rows_a, rows_b, strict=True):
        assert _exact(a) == _exact(b)
        for key in DRIFT_KEYS:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key


# slow (CI): two trainers compiled per param (shared and split); the fast lane runs the split
# trainer alone (test_resume_keeps_mu_on_the_rollout_devices)
@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({}, id="full-sync"),
        pytest.param({"lora_rank": 4, "pipeline_depth": 1}, id="lora-pipelined"),
    ],
)
def test_two_rollout_devices_give_the_shared_run(model_path, tmp_path, extra):
    """rollout_devices=2, mesh fsdp=3,tp=2 on the first 6 devices == rollout_devices=0 with
    the same learner mesh (mesh_subset): the same tokens, rewards, losses and final params;
    mu on the last 2 devices, refreshed at steps 0 and 2 with the copy time logged."""
    shared = _run(_cfg(model_path, tmp_path / "shared", mesh_subset=True, **extra))
    split = _run(_cfg(model_path, tmp_path / "split", rollout_devices=2, **extra))
    _assert_same_rows(shared[0], split[0])
    _assert_equal_trees(shared[1].params, split[1].params)

    devices = jax.devices()
    learner, sampler = set(devices[:6]), set(devices[6:])
    assert [(p, m) for p, m, _ in shared[2]] == [(learner, learner)] * 4
    assert [(p, m) for p, m, _ in split[2]] == [(learner, sampler)] * 4
    assert _devices_of(split[1].opt_state) == learner

    copies = [row["behaviour_copy_time"] for row in split[0]]
    assert copies[0] > 0 and copies[2] > 0 and copies[1] == copies[3] == 0.0
    assert [row["behaviour_version"] for row in split[0]] == [0, 0, 2, 2]
    if "lora_rank" in extra:  # the frozen base went to the sampler once: the same arrays
        base = lambda mu: [x for path, x in _flat(mu) if "lora" not in path]  # noqa: E731
        first, last = base(split[2][0][2]), base(split[2][-1][2])
        assert first and all(x is y for x, y in zip(first, last, strict=True))


def _flat(tree):
    return [
        (jax.tree_util.keystr(path), x) for path, x in jax.tree_util.tree_leaves_with_path(tree)
    ]


def test_the_run_starts_with_mu_on_the_rollout_devices(model_path, tmp_path):
    """rollout_devices=2: the params and moments on the first 6 devices, mu (the behaviour
    copy `init_run` makes) on the last 2; LoRA: only the adapters are copied there, the
    frozen base is placed there once. No step compiles (the runs: the tests below, slow)."""
    learner, sampler = set(jax.devices()[:6]), set(jax.devices()[6:])
    for extra in ({}, {"lora_rank": 4}):
        setup, state = init_run(_cfg(model_path, tmp_path, rollout_devices=2, **extra))
        assert _devices_of(state.params) == _devices_of(state.opt_state) == learner
        assert _devices_of(state.behaviour) == sampler
        again = refresh_behaviour(setup, state).behaviour
        assert _devices_of(again) == sampler
        if extra:  # the same frozen base arrays after a refresh
            base = lambda mu: [x for path, x in _flat(mu) if "lora" not in path]  # noqa: E731
            first, second = base(state.behaviour), base(again)
            assert first and all(x is y for x, y in zip(first, second, strict=True))


@pytest.mark.slow
def test_resume_keeps_mu_on_the_rollout_devices(model_path, tmp_path):
    """A checkpointed run stopped after step 1 resumes with mu restored onto the sampler's
    devices and ends where the uninterrupted run ends; the uninterrupted run keeps the params
    on the first 6 devices, mu on the last 2, refreshed at steps 0 and 2 with the copy time
    logged."""
    cfg = _cfg(model_path, tmp_path / "stopped", rollout_devices=2, checkpoint_every=1)
    whole = _run(cfg.replace(out_dir=str(tmp_path / "whole")))
    learner, sampler = set(jax.devices()[:6]), set(jax.devices()[6:])
    assert [(p, m) for p, m, _ in whole[2]] == [(learner, sampler)] * 4
    assert _devices_of(whole[1].opt_state) == learner
    copies = [row["behaviour_copy_time"] for row in whole[0]]
    assert copies[0] > 0 and copies[2] > 0 and copies[1] == copies[3] == 0.0
    assert [row["behaviour_version"] for row in whole[0]] == [0, 0, 2, 2]
    train(cfg, callback=lambda step, *_: step == 1)
    rows, state, seen = _run(cfg.replace(resume=True))
    assert [row["step"] for row in rows] == [2, 3]
    assert all(m == set(jax.devices()[6:]) for _, m, _ in seen)
    assert _devices_of(state.behaviour) == set(jax.devices()[6:])
    _assert_equal_trees(whole[1].params, state.params)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--rollout-devices", "-1"], "--rollout-devices: must be an integer >= 0, got -1"),
        (["--rollout-devices", "8"], "--rollout-devices: must be in [0, 8) on this host of 8"),
        (
            ["--rollout-devices", "2", "--mesh", "fsdp=4,tp=2"],
            "--mesh: mesh fsdp=4,tp=2 needs 8 devices, have 6 (rollout_devices=2 leaves the "
            "learner 6 of 8)",
        ),
        (
            ["--rollout-devices", "3", "--mesh", "fsdp=2"],
            "--mesh: mesh fsdp=2,tp=1 uses 2 of the 5 devices",
        ),
    ],
)
def test_bad_values_are_one_line_command_line_errors(model_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--model-path", model_path, *flags])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert f"error: {message}" in lines[-1]


def test_each_process_gives_its_last_devices_to_the_sampler():
    """P processes of n devices: the learner gets the first n - r of each, the sampler the
    last r of each, both in process order; one process: the first D - r and the last r."""
    per_process = [["a0", "a1", "a2"], ["b0", "b1", "b2"]]
    assert split_per_process(1, per_process) == (["a0", "a1", "b0", "b1"], ["a2", "b2"])
    assert split_per_process(2, per_process) == (["a0", "b0"], ["a1", "a2", "b1", "b2"])
    assert split_per_process(0, per_process) == (["a0", "a1", "a2", "b0", "b1", "b2"], [])
    devices = jax.devices()
    assert split_devices(3) == (devices[:5], devices[5:])


@pytest.mark.parametrize(
    ("r", "per_process", "message"),
    [
        (2, [["a0", "a1"], ["b0", "b1"]], r"must be in \[0, 2\) with 2 devices in the smallest "),
        (
            2,
            [["a0", "a1", "a2"], ["b0", "b1"]],
            r"must be in \[0, 2\) with 2 devices in the smallest of 2",
        ),
        (3, [["a0", "a1", "a2"]], r"must be in \[0, 3\) on this host of 3 devices"),
        (-1, [["a0", "a1"], ["b0", "b1"]], r"must be in \[0, 2\) .* got -1"),
    ],
)
def test_every_process_keeps_a_learner_device(r, per_process, message):
    with pytest.raises(ConfigError, match=r"rollout_devices: " + message):
        split_per_process(r, per_process)


@pytest.mark.slow
def test_pending_mu_live_on_the_rollout_devices_and_resume(model_path, tmp_path):
    """refresh_every=1, max_staleness=2: the copy of step 1 waits in ``state.pending`` on the
    sampler's devices when the run stops after step 1, is restored there, and samples step 3
    (behaviour_version 1) as in the uninterrupted run."""
    cfg = _cfg(
        model_path, tmp_path / "stopped", rollout_devices=2, checkpoint_every=1,
        refresh_every=1, max_staleness=2,
    )  # fmt: skip
    whole = _run(cfg.replace(out_dir=str(tmp_path / "whole")))
    assert [row["behaviour_version"] for row in whole[0]] == [0, 0, 0, 1]
    _, stopped = train(cfg, callback=lambda step, *_: step == 1, return_state=True)
    assert [v for v, _ in stopped.pending] == [1]
    assert _devices_of(stopped.pending[0][1]) == set(jax.devices()[6:])
    rows, state, _ = _run(cfg.replace(resume=True))
    _assert_same_rows(whole[0][2:], rows)
    _assert_equal_trees(whole[1].params, state.params)
