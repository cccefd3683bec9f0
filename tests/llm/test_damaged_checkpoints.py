"""A damaged or partial checkpoint on resume (`llm.rl.resume`): the run falls back to the
newest checkpoint that restores, says so in one warning line, moves the damaged one to
``checkpoints.damaged/`` and drops the metrics rows after the restored step; when none
restores, one ConfigError names each checkpoint tried, and nothing is moved or rewritten.

Damage: bytes of the array data flipped, the array data files removed (a partial copy), the
``_sharding`` file, orbax's tree ``_METADATA`` or the run's ``meta`` JSON cut in half.

No noise: the one warning is the only log record (orbax's failed reads leave asyncio tasks
that once logged a screen each), and an unraisable exception (a closed event loop, an
orbax coroutine raising on close) fails the test.
"""

import json
import logging
import pathlib
import shutil

import pytest

from llm.errors import ConfigError
from llm.models.tiny import make_tiny_checkpoint
from llm.rl import Checkpointer, init_run, save_state
from llm.rl.checkpoint import model_description
from llm.rl.metrics import read_metrics
from llm.trainer import TrainConfig, train

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")

DAMAGES = ("array_bytes", "array_files", "sharding", "tree_metadata", "meta")


def damage(step_dir: pathlib.Path, how: str) -> None:
    """Damage the checkpoint folder ``step_dir`` in one of the ways of DAMAGES."""
    state = step_dir / "state"
    data = [p for p in state.rglob("*") if p.is_file() and p.parent.name == "d"]
    assert data, f"no array data under {state}"
    if how == "array_bytes":  # the chunks of process 0's arrays (not the index nodes)
        for path in (p for p in data if p.parent.parent.name.startswith("ocdbt.process_")):
            raw = bytearray(path.read_bytes())
            for i in range(len(raw) // 4, len(raw), 97):
                raw[i] ^= 0xFF
            path.write_bytes(bytes(raw))
    elif how == "array_files":
        for path in data:
            path.unlink()
    else:
        files = {"sharding": "state/_sharding", "tree_metadata": "state/_METADATA"}
        path = step_dir / files.get(how, "meta/metadata")
        text = path.read_bytes()
        path.write_bytes(text[: len(text) // 2])


def _cfg(model_path, out_dir, **kw) -> TrainConfig:
    base = dict(
        model_path=model_path,
        task="arithmetic",
        task_kwargs={"num_examples": 16},
        num_steps=1,
        prompts_per_step=2,
        samples_per_prompt=2,
        max_new_tokens=3,
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
    """(model path, run folder): checkpoints 1 and 2 (the initial weights, saved as the
    trainer saves them: no step is compiled) and the metrics rows of steps 0 and 1."""
    root = tmp_path_factory.mktemp("damaged")
    model_path = str(make_tiny_checkpoint(root / "llama", "llama"))
    cfg = _cfg(model_path, root / "run")
    setup, state = init_run(cfg)
    ckpt = Checkpointer(root / "run" / "checkpoints")
    for step in (1, 2):
        save_state(
            ckpt, state._replace(step=step), config=cfg.to_dict(), finite=True,
            split=setup.split, model=model_description(setup.model_config),
        )  # fmt: skip
    ckpt.close()
    rows = [json.dumps({"step": step}) + "\n" for step in (0, 1)]
    (root / "run" / "metrics.jsonl").write_text("".join(rows))
    return model_path, root / "run"


@pytest.fixture
def copy_of_run(run, tmp_path):
    model_path, out = run
    shutil.copytree(out, tmp_path / "run")
    return model_path, tmp_path / "run"


def _kept(out: pathlib.Path, folder: str = "checkpoints") -> list[str]:
    return sorted(p.name for p in (out / folder).iterdir()) if (out / folder).exists() else []


@pytest.mark.parametrize("how", DAMAGES)
def test_resume_falls_back_to_the_newest_checkpoint_that_restores(copy_of_run, how, caplog):
    model_path, out = copy_of_run
    damage(out / "checkpoints" / "2", how)
    with caplog.at_level(logging.INFO, logger="llm.train"):
        history, state = train(_cfg(model_path, out, resume=True), return_state=True)
    assert history == [] and state.step == 1  # checkpoint 1 restored; num_steps=1: done
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert warnings[0].startswith("checkpoint 2 does not restore (")
    assert (
        "resuming from checkpoint 1 instead (the metrics rows from step 1 on are dropped)"
        in (warnings[0])
    )
    assert warnings[0].endswith(f"moved to {out / 'checkpoints.damaged' / '2'}")
    assert _kept(out) == ["1"] and _kept(out, "checkpoints.damaged") == ["2"]
    assert [r["step"] for r in read_metrics(out)] == [0]  # row 1 is after checkpoint 1


def test_the_damage_is_named_and_the_run_can_save_that_step_again(copy_of_run, caplog):
    model_path, out = copy_of_run
    damage(out / "checkpoints" / "2", "array_bytes")
    cfg = _cfg(model_path, out, resume=True)
    with caplog.at_level(logging.WARNING, logger="llm.train"):
        _, state = train(cfg, return_state=True)
    # the root cause: a checksum or, when a flipped byte lands in a frame header (the data
    # file's layout varies from run to run), the decompressor names the damaged bytes
    message = caplog.records[0].getMessage()
    assert "Data corruption detected" in message or "ZSTD_decompressStream() failed" in message
    setup, _ = init_run(cfg)
    ckpt = Checkpointer(out / "checkpoints")
    save_state(ckpt, state._replace(step=2), config=cfg.to_dict(), finite=True, split=setup.split)
    assert ckpt.all_steps() == [1, 2]
    ckpt.close()


def test_resume_stops_with_one_error_naming_every_checkpoint_when_none_restores(copy_of_run):
    model_path, out = copy_of_run
    damage(out / "checkpoints" / "2", "array_bytes")
    damage(out / "checkpoints" / "1", "sharding")
    with pytest.raises(ConfigError, match="cannot resume: no checkpoint in") as info:
        train(_cfg(model_path, out, resume=True))
    message = info.value.message
    assert "\n" not in message
    assert "(checkpoint 2: ValueError: " in message and "; checkpoint 1: ValueError: " in message
    assert "_sharding" in message  # checkpoint 1's reason
    assert _kept(out) == ["1", "2"] and _kept(out, "checkpoints.damaged") == []  # none moved
    assert [r["step"] for r in read_metrics(out)] == [0, 1]  # nor the metrics rewritten


def test_a_changed_config_is_refused_not_fallen_back_from(copy_of_run):
    """A checkpoint that reads but belongs to another config stops the resume: an older
    checkpoint of the same run would not help, and nothing is moved."""
    model_path, out = copy_of_run
    with pytest.raises(ConfigError, match=r"seed \(checkpoint 0, now 1\)"):
        train(_cfg(model_path, out, resume=True, seed=1))
    assert _kept(out) == ["1", "2"] and _kept(out, "checkpoints.damaged") == []
