"""`python -m llm.train --resume` as a user runs it, on a run killed before its checkpoint 6
(a copy of an uninterrupted 6-step cosine run without that checkpoint): a longer
``--num-steps`` is refused in one line unless ``--schedule-steps`` keeps the horizon, and
then the steps after the resume use the planned rates; a damaged checkpoint 4 is stepped
past to checkpoint 2 with one warning line, and the run ends as the uninterrupted one; with
every checkpoint damaged, one error line. No traceback, no asyncio noise at exit.

4 simulated devices (fsdp=2,tp=2: the restore reads sharded arrays), a persistent
compilation cache shared by the module's runs (tests/llm/conftest.py ``env``).
"""

import pathlib
import shutil
import subprocess
import sys

import pytest

from llm.models.tiny import make_tiny_checkpoint
from llm.rl.metrics import read_metrics
from llm.rl.schedule import learning_rate_schedule

REPO = pathlib.Path(__file__).resolve().parents[2]
KEYS = ("lr", "loss", "grad_norm", "reward_mean", "logratio_abs")


def _command(model_path, out_dir, *extra) -> list[str]:
    flags = dict(
        model_path=model_path,
        task="arithmetic",
        task_kwargs='{"num_examples": 64}',
        num_steps=6,
        prompts_per_step=2,
        samples_per_prompt=4,
        max_new_tokens=6,
        delta_v=-0.5,  # every advantage is nonzero: every step moves the weights
        learning_rate=3e-3,
        lr_schedule="cosine",
        eval_prompts=0,
        mesh="fsdp=2,tp=2",
        checkpoint_every=2,
        keep_checkpoints=3,
        tensorboard="false",
        progress="false",
        out_dir=str(out_dir),
    )
    argv = [x for k, v in flags.items() for x in ("--" + k.replace("_", "-"), str(v))]
    return [sys.executable, "-m", "llm.train", *argv, *extra]


def _run(command, env) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, env):
    """(model path, run folder) of the uninterrupted run: checkpoints 2, 4, 6."""
    root = tmp_path_factory.mktemp("resume_cli")
    model_path = str(make_tiny_checkpoint(root / "llama", "llama"))
    proc = _run(_command(model_path, root / "run"), env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return model_path, root / "run"


@pytest.fixture
def killed(uninterrupted, tmp_path):
    """The run killed just before checkpoint 6: its rows 0..5, checkpoints 2 and 4."""
    model_path, ref = uninterrupted
    shutil.copytree(ref, tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "6")
    return model_path, tmp_path / "run"


def _flip_array_bytes(step_dir: pathlib.Path) -> None:
    for path in step_dir.glob("state/ocdbt.process_*/d/*"):
        raw = bytearray(path.read_bytes())
        for i in range(len(raw) // 4, len(raw), 97):
            raw[i] ^= 0xFF
        path.write_bytes(bytes(raw))


def _clean(stderr: str) -> None:
    assert "Traceback" not in stderr and "Event loop is closed" not in stderr, stderr[-3000:]


@pytest.mark.slow
def test_a_longer_cosine_run_keeps_its_planned_rates(uninterrupted, killed, env):
    model_path, ref = uninterrupted
    _, out = killed
    proc = _run(_command(model_path, out, "--resume", "--num-steps", "10"), env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(
        "python -m llm.train: error: --resume: cannot resume: num_steps 6 -> 10 would move the "
        "horizon of the 'cosine' lr_schedule from 6 to 10 steps"
    ), proc.stderr

    extra = ("--resume", "--num-steps", "10", "--schedule-steps", "6")
    proc = _run(_command(model_path, out, *extra), env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _clean(proc.stderr)
    rows, ref_rows = read_metrics(out), read_metrics(ref)
    assert [r["step"] for r in rows] == list(range(10))
    for key in KEYS:  # steps 4 and 5, after the resume, are those of the uninterrupted run
        assert [r[key] for r in rows[:6]] == [r[key] for r in ref_rows], key
    planned = learning_rate_schedule(3e-3, 6, kind="cosine")
    assert rows[4]["lr"] == pytest.approx(planned(4), rel=1e-6)
    assert rows[4]["lr"] == pytest.approx(2.86e-4, rel=1e-2)  # not 1.76e-3 (horizon 10)
    assert [r["lr"] for r in rows[6:]] == [0.0] * 4  # past the horizon: the final rate


@pytest.mark.slow
def test_a_damaged_checkpoint_is_stepped_past(uninterrupted, killed, env):
    model_path, ref = uninterrupted
    _, out = killed
    _flip_array_bytes(out / "checkpoints" / "4")
    proc = _run(_command(model_path, out, "--resume"), env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _clean(proc.stderr)
    warnings = [line for line in proc.stderr.splitlines() if " WARNING " in line]
    assert len(warnings) == 1, proc.stderr[-3000:]
    assert "checkpoint 4 does not restore (ValueError: " in warnings[0]
    assert "resuming from checkpoint 2 instead" in warnings[0]
    assert f"resumed from {out / 'checkpoints'} at step 2" in proc.stderr
    rows, ref_rows = read_metrics(out), read_metrics(ref)
    assert [r["step"] for r in rows] == list(range(6))  # rows 2..5 rewritten, once each
    for key in KEYS:
        assert [r[key] for r in rows] == [r[key] for r in ref_rows], key
    kept = sorted(int(p.name) for p in (out / "checkpoints").iterdir())
    assert kept == [2, 4, 6] and (out / "checkpoints.damaged" / "4" / "state").is_dir()


@pytest.mark.slow
def test_no_checkpoint_restores_one_error_line(uninterrupted, killed, env):
    model_path, _ = uninterrupted
    _, out = killed
    for step in (2, 4):
        _flip_array_bytes(out / "checkpoints" / str(step))
    proc = _run(_command(model_path, out, "--resume"), env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.count("\n") == 1, proc.stderr[-3000:]
    assert proc.stderr.startswith(
        f"python -m llm.train: error: --resume: cannot resume: no checkpoint in "
        f"{out / 'checkpoints'} restores (checkpoint 4: ValueError: "
    )
    assert "; checkpoint 2: ValueError: " in proc.stderr
