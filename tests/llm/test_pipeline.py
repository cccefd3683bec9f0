"""The pipelined trainer (``pipeline_depth`` > 0, llm.rl.pipeline) is the synchronous one bit
for bit: same rows (but the timings), same checkpoints, same final params and export, across
a refresh, with micro-batches, with LoRA on the 8-device mesh; a run stopped with rollouts in
flight resumes to the uninterrupted result."""

import pathlib
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from llm.models.tiny import make_tiny_checkpoint
from llm.rl import init_run
from llm.rl import pipeline as pipeline_lib
from llm.rl.checkpoint import Checkpointer
from llm.rl.metrics import read_metrics
from llm.rl.step import TIMING_KEYS, behaviour_version
from llm.trainer import TrainConfig, train

# The fast-compile flag of tests/conftest.py, for the subprocesses that set XLA_FLAGS.
O0 = " --xla_backend_optimization_level=0"

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "llama", "llama"))


def _cfg(model_path, out_dir, **kw):
    base = dict(
        model_path=model_path,
        task="arithmetic",
        task_kwargs={"num_examples": 64},
        num_steps=5,
        refresh_every=2,
        prompts_per_step=4,
        samples_per_prompt=4,
        micro_batches=2,
        max_new_tokens=6,
        delta_v=-0.5,
        learning_rate=1e-2,
        eval_prompts=0,
        mesh="fsdp=1",
        mesh_subset=True,
        checkpoint_every=1,
        keep_checkpoints=1,
        out_dir=str(out_dir),
        progress=False,
        tensorboard=False,
    )
    return TrainConfig(**(base | kw))


class Recorder:
    """What a run writes to its checkpoints and the order of its scheduling events."""

    def __init__(self, monkeypatch):
        self.saved, self.events = {}, []
        save, submit = Checkpointer.save, pipeline_lib.RolloutPipeline._submit
        learn, sample = pipeline_lib.dispatch_learn, pipeline_lib.behaviour_rollout

        def recording_save(ckpt, step, state, meta, *, finite):
            mutable = dict.fromkeys(("pipeline_depth", "out_dir", "resume"))
            kept = dict(meta, config=dict(meta["config"], **mutable))
            self.saved[step] = (jax.tree.map(np.asarray, dict(state)), kept)
            return save(ckpt, step, state, meta, finite=finite)

        def recording_submit(pipe, job):
            self.events.append(("submit", job.step))
            return submit(pipe, job)

        def recording_learn(setup, state, ro, **kw):
            self.events.append(("learn", state.step))
            return learn(setup, state, ro, **kw)

        def recording_sample(*args, **kw):
            self.events.append(("sample", threading.current_thread().name))
            return sample(*args, **kw)

        monkeypatch.setattr(Checkpointer, "save", recording_save)
        monkeypatch.setattr(pipeline_lib.RolloutPipeline, "_submit", recording_submit)
        monkeypatch.setattr(pipeline_lib, "dispatch_learn", recording_learn)
        monkeypatch.setattr(pipeline_lib, "behaviour_rollout", recording_sample)

    def run(self, cfg, **kw):
        self.saved, self.events = {}, []
        history, state = train(cfg, return_state=True, **kw)
        return history, state, self.saved, self.events


def _untimed(history):
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]


def _assert_trees_equal(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _assert_same_run(run_a, run_b):
    (hist_a, state_a, saved_a, _), (hist_b, state_b, saved_b, _) = run_a, run_b
    assert _untimed(hist_a) == _untimed(hist_b)
    assert state_a.step == state_b.step and state_a.data == state_b.data
    _assert_trees_equal(
        (state_a.params, state_a.opt_state, state_a.behaviour, state_a.pending),
        (state_b.params, state_b.opt_state, state_b.behaviour, state_b.pending),
    )
    assert sorted(saved_a) == sorted(saved_b)
    for step in saved_a:
        assert saved_a[step][1] == saved_b[step][1], step  # step, data position, config
        _assert_trees_equal(saved_a[step][0], saved_b[step][0])


# slow (CI): each compiles a trainer of its own (evaluation and export; LoRA on 8 devices);
# the fast lane's pipelined == synchronous checks share the base config's compilation
@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"eval_prompts": 3, "eval_every": 2}, id="full-1device-eval"),
        pytest.param({"lora_rank": 4, "mesh": "fsdp=4,tp=2", "mesh_subset": False}, id="lora-8"),
    ],
)
def test_pipelined_run_is_the_synchronous_run(model_path, tmp_path, monkeypatch, extra):
    recorder = Recorder(monkeypatch)
    extra = extra | {"export_hf": True}
    sync = recorder.run(_cfg(model_path, tmp_path / "sync", **extra))
    piped = recorder.run(_cfg(model_path, tmp_path / "piped", pipeline_depth=2, **extra))
    _assert_same_run(sync, piped)
    exported = sorted((tmp_path / "sync").glob("*/*.safetensors"))
    assert exported and len(exported) == (2 if "lora_rank" in extra else 1)
    for path in exported:
        same = tmp_path / "piped" / path.relative_to(tmp_path / "sync")
        _assert_trees_equal(load_file(str(path)), load_file(str(same)))
    rows = piped[0]
    assert [r["behaviour_version"] for r in rows] == [0, 0, 2, 2, 4]
    assert [r["behaviour_age"] for r in rows] == [0, 1, 0, 1, 0]
    # synchronous: sampled on the learner's thread, one step at a time
    assert {e for e in sync[3] if e[0] == "sample"} == {("sample", "MainThread")}
    assert not [e for e in sync[3] if e[0] == "submit"]
    # pipelined: sampled on the producer thread, step t+1 of a window scheduled before
    # step t's update, never past a refresh (R = 2) nor the last step
    events = [e for e in piped[3] if e[0] != "sample"]
    assert events == [
        ("submit", 0),
        ("submit", 1),
        ("learn", 0),
        ("learn", 1),
        ("submit", 2),
        ("submit", 3),
        ("learn", 2),
        ("learn", 3),
        ("submit", 4),
        ("learn", 4),
    ]
    assert {e[1] for e in piped[3] if e[0] == "sample"} == {"rollout_0"}


@pytest.mark.slow  # the fast lane stops and resumes a pipelined run in the two tests below
def test_resume_after_a_stop_with_rollouts_in_flight(model_path, tmp_path, monkeypatch):
    """Stopped after 3 updates (the rollout of step 3 in flight, dropped), resumed to 5:
    the uninterrupted synchronous run's rows, state and checkpoints."""
    recorder = Recorder(monkeypatch)
    cfg = _cfg(model_path, tmp_path / "piped", pipeline_depth=3, refresh_every=4)
    sync = recorder.run(cfg.replace(out_dir=str(tmp_path / "sync"), pipeline_depth=0))
    first = recorder.run(cfg, callback=lambda step, *_: step == 2)
    assert [e for e in first[3] if e[0] == "submit"] == [("submit", s) for s in range(4)]
    assert sorted(first[2]) == [1, 2, 3]
    second = recorder.run(cfg.replace(resume=True))
    assert [row["step"] for row in second[0]] == [3, 4]
    resumed = (first[0] + second[0], second[1], first[2] | second[2], None)
    _assert_same_run(sync, resumed)


def test_depth_is_checked(model_path, tmp_path):
    with pytest.raises(ValueError, match="pipeline_depth"):
        _cfg(model_path, tmp_path, pipeline_depth=-1).validate()
    with pytest.raises(ValueError, match="depth must be an integer >= 0"):
        pipeline_lib.RolloutPipeline(None, iter([]), depth=-1)


def test_one_step_staleness_overlaps_every_step_and_stays_exact(model_path, tmp_path, monkeypatch):
    """max_staleness = 1 with refresh_every = 1: step t samples from the params of step t - 1
    (one-step off-policy), so its rollout is made while update t - 1 runs; pipelined equals
    synchronous equals a loop of `rl_step`, and a stopped run resumes exactly."""
    recorder = Recorder(monkeypatch)
    cfg = _cfg(model_path, tmp_path / "sync", refresh_every=1, max_staleness=1)
    sync = recorder.run(cfg)
    piped_cfg = cfg.replace(out_dir=str(tmp_path / "piped"), pipeline_depth=2)
    piped = recorder.run(piped_cfg)
    _assert_same_run(sync, piped)
    assert [r["behaviour_version"] for r in sync[0]] == [0, 0, 1, 2, 3]
    assert [r["behaviour_age"] for r in sync[0]] == [0, 1, 1, 1, 1]
    assert all(r["logratio_abs"] > 0 for r in sync[0][1:])  # mu lags: off-policy
    assert [e for e in piped[3] if e[0] != "sample"] == [
        ("submit", 0),
        ("submit", 1),
        ("learn", 0),
        *[e for t in range(1, 4) for e in (("submit", t + 1), ("learn", t))],
        ("learn", 4),
    ]
    rows, state = _rl_step_loop(cfg)
    assert _untimed(rows) == _untimed(sync[0])
    _assert_trees_equal(state.params, sync[1].params)

    first = recorder.run(
        piped_cfg.replace(out_dir=str(tmp_path / "stopped")), callback=lambda s, *_: s == 1
    )
    second = recorder.run(piped_cfg.replace(out_dir=str(tmp_path / "stopped"), resume=True))
    _assert_same_run(sync, (first[0] + second[0], second[1], first[2] | second[2], None))


@pytest.mark.parametrize("refresh_every", [1, 2, 3, 4])
@pytest.mark.parametrize("max_staleness", [0, 1, 2, 3, 5])
def test_behaviour_version_is_the_last_refresh_k_steps_back(refresh_every, max_staleness):
    """Step t samples from the last refresh (a multiple of R) at or before t - k, or from the
    initial mu (version 0) while there is none."""
    cfg = TrainConfig(refresh_every=refresh_every, max_staleness=max_staleness)
    for t in range(40):
        refreshes = [v for v in range(0, t + 1, refresh_every) if v <= t - max_staleness]
        assert behaviour_version(cfg, t) == max(refreshes, default=0), t


def test_staleness_beyond_one_step_holds_pending_mus_and_resumes_exactly(
    model_path, tmp_path, monkeypatch
):
    """max_staleness = 3, refresh_every = 1: step t samples from the params of step t - 3, two
    refreshed copies wait in ``state.pending`` (and in each checkpoint); pipelined equals
    synchronous equals a loop of `rl_step`, and a run stopped with two pending copies resumes
    to the uninterrupted result."""
    recorder = Recorder(monkeypatch)
    cfg = _cfg(model_path, tmp_path / "sync", num_steps=6, refresh_every=1, max_staleness=3)
    params_before, behaviour_after = [], []

    def record(step, params, behaviour, row):
        params_before.append(jax.tree.map(np.asarray, params))  # those of step + 1
        behaviour_after.append(jax.tree.map(np.asarray, behaviour))

    init = jax.tree.map(np.asarray, init_run(cfg)[1].params)
    sync = recorder.run(cfg, callback=record)
    assert [r["behaviour_version"] for r in sync[0]] == [0, 0, 0, 0, 1, 2]
    assert [r["behaviour_age"] for r in sync[0]] == [0, 1, 2, 3, 3, 3]
    assert [v for v, _ in sync[1].pending] == [4, 5]  # made at steps 4 and 5, never used
    assert [saved[1]["pending_versions"] for saved in sync[2].values()] == [
        [], [1], [1, 2], [2, 3], [3, 4], [4, 5]
    ]  # fmt: skip
    params_of = [init, *params_before]  # params_of[v]: the params at the start of step v
    for step, behaviour in enumerate(behaviour_after):  # mu of step + 1 = params of its version
        _assert_trees_equal(behaviour, params_of[behaviour_version(cfg, step + 1)])

    piped_cfg = cfg.replace(out_dir=str(tmp_path / "piped"), pipeline_depth=3)
    piped = recorder.run(piped_cfg)
    _assert_same_run(sync, piped)
    rows, state = _rl_step_loop(cfg)
    assert _untimed(rows) == _untimed(sync[0])
    _assert_trees_equal((state.params, state.pending), (sync[1].params, sync[1].pending))

    stopped = piped_cfg.replace(out_dir=str(tmp_path / "stopped"))
    first = recorder.run(stopped, callback=lambda s, *_: s == 2)
    assert [v for v, _ in first[1].pending] == [1, 2]
    second = recorder.run(stopped.replace(resume=True))
    _assert_same_run(sync, (first[0] + second[0], second[1], first[2] | second[2], None))


@pytest.mark.slow
def test_staleness_beyond_the_window_with_lora_on_eight_devices(model_path, tmp_path, monkeypatch):
    """LoRA on fsdp=4, tp=2 with refresh_every = 2, max_staleness = 3: stopped with a pending
    copy of the adapters, the pipelined run resumes to the synchronous one."""
    recorder = Recorder(monkeypatch)
    extra = dict(lora_rank=4, mesh="fsdp=4,tp=2", mesh_subset=False, num_steps=6)
    cfg = _cfg(model_path, tmp_path / "sync", refresh_every=2, max_staleness=3, **extra)
    sync = recorder.run(cfg)
    assert [r["behaviour_version"] for r in sync[0]] == [0, 0, 0, 0, 0, 2]
    stopped = cfg.replace(out_dir=str(tmp_path / "stopped"), pipeline_depth=2)
    first = recorder.run(stopped, callback=lambda s, *_: s == 3)
    assert [v for v, _ in first[1].pending] == [2]
    second = recorder.run(stopped.replace(resume=True))
    _assert_same_run(sync, (first[0] + second[0], second[1], first[2] | second[2], None))


def _rl_step_loop(cfg):
    from llm.data.iterator import BatchIterator
    from llm.rl import init_run, rl_step
    from llm.rl.tasks import run_examples

    setup, state = init_run(cfg)
    batches = BatchIterator(run_examples(cfg, None, None)[0], cfg.prompts_per_step, seed=cfg.seed)
    rows = []
    for _ in range(cfg.num_steps):
        state, row = rl_step(setup, state, next(batches), learning_rate=cfg.learning_rate)
        rows.append(row)
    return rows, state


@pytest.mark.slow
def test_command_line_on_eight_devices(model_path, env, tmp_path):
    """`python -m llm.train --pipeline-depth 2` in a process of its own with 8 CPU devices
    (fsdp=4, tp=2, LoRA, micro-batches, one-step staleness): the metrics and the export of
    the synchronous run."""
    env = env | {"XLA_FLAGS": "--xla_force_host_platform_device_count=8" + O0}
    flags = dict(
        model_path=model_path,
        task_kwargs='{"num_examples": 64}',
        num_steps=4,
        refresh_every=2,
        max_staleness=1,
        prompts_per_step=4,
        samples_per_prompt=4,
        micro_batches=2,
        max_new_tokens=6,
        learning_rate=1e-2,
        eval_prompts=0,
        lora_rank=4,
        mesh="fsdp=4,tp=2",
        export_hf="true",
        tensorboard="false",
        progress="false",
    )
    argv = [x for k, v in flags.items() for x in ("--" + k.replace("_", "-"), str(v))]
    outs = {depth: tmp_path / f"depth{depth}" for depth in (0, 2)}
    for depth, out in outs.items():
        command = [sys.executable, "-m", "llm.train", *argv, "--out-dir", str(out)]
        command += ["--pipeline-depth", str(depth)]
        proc = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [_untimed(read_metrics(out)) for out in outs.values()]
    assert rows[0] == rows[1] and [r["behaviour_version"] for r in rows[0]] == [0, 0, 0, 2]
    for name in ("hf/model.safetensors", "adapter/adapter_model.safetensors"):
        _assert_trees_equal(*(load_file(str(out / name)) for out in outs.values()))


def test_a_failing_reward_on_the_producer_thread_stops_the_run(model_path, tmp_path):
    """The producer's error reaches the learner at the step it belongs to, and the producer
    thread ends (no hang, nothing left running)."""
    calls = []

    def failing_reward(prompts, completions, answer, **columns):
        calls.append(threading.current_thread().name)
        if len(calls) == 3:
            raise RuntimeError("reward server down")
        return [1.0 if c[:1].isalpha() else -1.0 for c in completions]

    cfg = _cfg(model_path, tmp_path, pipeline_depth=2, refresh_every=4, checkpoint_every=0)
    rows = []
    with pytest.raises(RuntimeError, match="reward server down"):
        train(cfg, reward_fn=failing_reward, callback=lambda s, p, b, row: rows.append(s))
    assert rows == [0, 1]  # the third rollout failed: steps 0 and 1 were updated
    assert set(calls) == {"rollout_0"}
    assert not [t for t in threading.enumerate() if t.name.startswith("rollout")]
