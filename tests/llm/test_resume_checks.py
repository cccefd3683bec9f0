"""Resuming a run checks its config against the checkpoint's: a change to a field that
alters the maths (not in ``RESUME_MUTABLE``) is refused with a ConfigError naming each
changed field; the bookkeeping fields in ``RESUME_MUTABLE`` may change."""

import json
import shutil

import pytest

from llm.errors import ConfigError
from llm.models.tiny import make_tiny_checkpoint
from llm.rl import Checkpointer, init_run, save_state
from llm.rl.config import RESUME_MUTABLE
from llm.rl.metrics import read_metrics
from llm.trainer import TrainConfig, train


def _cfg(model_path, out_dir, **kw) -> TrainConfig:
    base = dict(
        model_path=model_path,
        task="arithmetic",
        task_kwargs={"num_examples": 16},
        num_steps=1,
        prompts_per_step=2,
        samples_per_prompt=2,
        max_new_tokens=3,
        learning_rate=1e-2,
        eval_prompts=0,
        mesh="fsdp=1",
        mesh_subset=True,
        checkpoint_every=1,
        out_dir=str(out_dir),
        progress=False,
        tensorboard=False,
    )
    return TrainConfig(**(base | kw))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(model path, run folder) of a run stopped after update 0: the checkpoint of step 1
    (the initial weights, saved as the trainer saves them: no step is compiled) and the
    metrics row of step 0."""
    root = tmp_path_factory.mktemp("resume")
    model_path = str(make_tiny_checkpoint(root / "llama", "llama"))
    cfg = _cfg(model_path, root / "run")
    setup, state = init_run(cfg)
    ckpt = Checkpointer(root / "run" / "checkpoints")
    save_state(ckpt, state._replace(step=1), config=cfg.to_dict(), finite=True, split=setup.split)
    ckpt.close()
    (root / "run" / "metrics.jsonl").write_text(json.dumps({"step": 0}) + "\n")
    return model_path, root / "run"


@pytest.fixture
def copy_of_run(run, tmp_path):
    """A fresh copy of the run folder, so each test resumes the same checkpoint."""
    model_path, out = run
    shutil.copytree(out, tmp_path / "run")
    return model_path, tmp_path / "run"


def test_resume_refuses_changed_fields_and_names_each(copy_of_run):
    model_path, out = copy_of_run
    cfg = _cfg(model_path, out, resume=True, learning_rate=2e-2, delta_v=-0.5)
    with pytest.raises(ConfigError, match="cannot resume") as info:
        train(cfg)
    assert info.value.field == "resume"
    message = info.value.message
    assert "learning_rate" in message and "0.01" in message and "0.02" in message
    assert "delta_v" in message and "-0.5" in message
    assert "prompts_per_step" not in message  # unchanged fields are not named
    assert [r["step"] for r in read_metrics(out)] == [0]  # nothing was run or rewritten


def test_resume_accepts_changed_mutable_fields(copy_of_run):
    model_path, out = copy_of_run
    changes = dict(keep_checkpoints=3, checkpoint_every=2, eval_every=5, log_every=3)
    assert set(changes) <= set(RESUME_MUTABLE)
    history, state = train(_cfg(model_path, out, resume=True, **changes), return_state=True)
    assert history == [] and state.step == 1  # restored at step 1 of num_steps=1: done
    assert [r["step"] for r in read_metrics(out)] == [0]
