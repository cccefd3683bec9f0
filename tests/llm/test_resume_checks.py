"""Resuming a run checks the checkpoint against it before restoring anything (`llm.rl.resume`):
a change to a field that alters the maths (not in ``RESUME_MUTABLE``) is refused with one
ConfigError naming each changed field, before the model loads; a model changed in place, or
arrays of other shapes, are refused before any array is read; the bookkeeping fields in
``RESUME_MUTABLE`` may change. The command line turns the refusal into one ``error:`` line."""

import json
import pathlib
import shutil
import subprocess
import sys

import pytest

from llm.errors import ConfigError
from llm.models.tiny import make_tiny_checkpoint
from llm.rl import Checkpointer, init_run, loop, save_state
from llm.rl.checkpoint import model_description
from llm.rl.config import RESUME_MUTABLE
from llm.rl.metrics import read_metrics
from llm.rl.resume import check_arrays, check_config, check_model
from llm.trainer import TrainConfig, train

REPO = pathlib.Path(__file__).resolve().parents[2]


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
        lora_rank=4,
        lora_targets="q,v",
        eval_prompts=0,
        mesh="fsdp=1",
        mesh_subset=True,
        checkpoint_every=1,
        out_dir=str(out_dir),
        progress=False,
        tensorboard=False,
    )
    return TrainConfig(**(base | kw))


def _save_run(model_path, out, *, model=True) -> None:
    """A LoRA run stopped after update 0: the checkpoint of step 1 (the initial weights, saved
    as the trainer saves them, with the model's description unless ``model`` is False: no
    step is compiled) and the metrics row of step 0."""
    cfg = _cfg(model_path, out)
    setup, state = init_run(cfg)
    ckpt = Checkpointer(out / "checkpoints")
    described = model_description(setup.model_config) if model else None
    save_state(
        ckpt, state._replace(step=1), config=cfg.to_dict(), finite=True, split=setup.split,
        model=described,
    )  # fmt: skip
    ckpt.close()
    (out / "metrics.jsonl").write_text(json.dumps({"step": 0}) + "\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(model path, run folder) of `_save_run`."""
    root = tmp_path_factory.mktemp("resume")
    model_path = str(make_tiny_checkpoint(root / "llama", "llama"))
    _save_run(model_path, root / "run")
    return model_path, root / "run"


@pytest.fixture
def copy_of_run(run, tmp_path):
    """A fresh copy of the run folder, so each test resumes the same checkpoint."""
    model_path, out = run
    shutil.copytree(out, tmp_path / "run")
    return model_path, tmp_path / "run"


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if the trainer gets as far as loading the model."""

    def init_run(*args, **kwargs):
        raise AssertionError("the model was loaded before the config was checked")

    monkeypatch.setattr(loop, "init_run", init_run)


def test_resume_refuses_changed_fields_and_names_each(copy_of_run, no_model_load):
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


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        (dict(lora_rank=8), "lora_rank (checkpoint 4, now 8)"),
        (dict(lora_rank=0), "lora_rank (checkpoint 4, now 0)"),
        (dict(lora_targets="q,v,o,down"), "lora_targets (checkpoint 'q,v', now 'q,v,o,down')"),
        (dict(loss="grpo", kl_beta=0.1), "kl_beta (checkpoint 0.0, now 0.1)"),
        (dict(dtype="bfloat16"), "dtype (checkpoint 'float32', now 'bfloat16')"),
    ],
)
def test_resume_refuses_a_changed_tree_before_loading_the_model(
    copy_of_run, no_model_load, changes, named
):
    """Fields that change the saved tree's shapes or leaves (an orbax traceback once)."""
    model_path, out = copy_of_run
    with pytest.raises(ConfigError, match="cannot resume") as info:
        train(_cfg(model_path, out, resume=True, **changes))
    assert named in info.value.message
    assert "\n" not in str(info.value)


def test_resume_refuses_another_model_path(copy_of_run, tmp_path, no_model_load):
    model_path, out = copy_of_run
    other = str(make_tiny_checkpoint(tmp_path / "qwen2", "qwen2"))
    with pytest.raises(ConfigError, match="cannot resume") as info:
        train(_cfg(other, out, resume=True))
    assert f"model_path (checkpoint {model_path!r}, now {other!r})" in info.value.message


def test_resume_refuses_a_model_changed_in_place(tmp_path):
    """Same model_path, another model there: its config differs (no orbax error, nothing
    restored); a change that keeps every shape (rope_theta) is caught too."""
    model_path = str(make_tiny_checkpoint(tmp_path / "llama", "llama"))
    _save_run(model_path, tmp_path / "run")
    make_tiny_checkpoint(tmp_path / "llama", "llama", rope_theta=10000.0)
    with pytest.raises(ConfigError, match="cannot resume") as info:
        train(_cfg(model_path, tmp_path / "run", resume=True))
    message = info.value.message
    assert "the model at model_path differs from the checkpoint's in rope_theta" in message
    assert "(checkpoint 500000.0, now 10000.0)" in message
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [0]


def test_resume_checks_the_arrays_of_a_checkpoint_without_model_config(tmp_path):
    """A checkpoint that does not record its model (older versions): the shapes of its
    arrays are checked before they are read; a model with a third layer is refused."""
    model_path = str(make_tiny_checkpoint(tmp_path / "llama", "llama"))
    _save_run(model_path, tmp_path / "run", model=False)
    make_tiny_checkpoint(tmp_path / "llama", "llama", num_hidden_layers=3)
    with pytest.raises(ConfigError, match="arrays are not this run's") as info:
        train(_cfg(model_path, tmp_path / "run", resume=True))
    # layer 2's adapters (q and v: a, b) of the params, mu, and Adam's two moments
    message = info.value.message
    assert "not in the checkpoint: behaviour/layers/2/attn/q_lora/a, " in message
    assert message.endswith(" and 13 more")


def test_check_arrays_names_missing_extra_and_changed_leaves():
    saved = {("a",): ((2, 3), "float32"), ("b",): ((4,), "float32"), ("old",): ((1,), "int32")}
    saved |= {("x", str(i)): ((1,), "float32") for i in range(5)}
    wanted = {("a",): ((2, 4), "float32"), ("b",): ((4,), "bfloat16"), ("new",): ((1,), "int32")}
    check_arrays(saved, saved)  # the same arrays: nothing to say
    with pytest.raises(ConfigError) as info:
        check_arrays(saved, wanted)
    message = info.value.message
    assert "not in the checkpoint: new;" in message
    assert "only in the checkpoint: old, x/0, x/1 and 3 more;" in message
    assert "a (2, 3) float32 -> (2, 4) float32, b (4,) float32 -> (4,) bfloat16" in message


def test_check_model_skips_checkpoints_without_one_and_names_differences():
    from llm.models.tiny import tiny_config

    config = tiny_config("llama")
    check_model({}, config)  # an older checkpoint: nothing recorded, nothing to check
    check_model({"model_config": model_description(config)}, config)
    other = model_description(tiny_config("llama", intermediate_size=96))
    with pytest.raises(ConfigError, match=r"intermediate_size \(checkpoint 96, now 128\)$"):
        check_model({"model_config": other}, config)
    runtime = config.replace(remat="layer", attention_impl="xla")  # how it runs: not checked
    check_model({"model_config": model_description(config)}, runtime)


def test_a_checkpoint_older_than_learner_distribution_resumes_what_it_computed():
    """Older versions scored log pi at T = 1: their checkpoints resume as "model", or as the
    (identical) "sampling" when they sampled at T = 1 without top-p."""
    plain = TrainConfig(model_path="m", temperature=1.0)
    tempered = TrainConfig(model_path="m", temperature=0.7)
    older = lambda cfg: {k: v for k, v in cfg.to_dict().items() if k != "learner_distribution"}
    check_config(older(plain), plain)
    check_config(older(tempered), tempered.replace(learner_distribution="model"))
    with pytest.raises(ConfigError, match=r"learner_distribution \(checkpoint 'model', now"):
        check_config(older(tempered), tempered)


def test_resume_accepts_changed_mutable_fields(copy_of_run):
    model_path, out = copy_of_run
    changes = dict(keep_checkpoints=3, checkpoint_every=2, eval_every=5, log_every=3)
    assert set(changes) <= set(RESUME_MUTABLE)
    history, state = train(_cfg(model_path, out, resume=True, **changes), return_state=True)
    assert history == [] and state.step == 1  # restored at step 1 of num_steps=1: done
    assert [r["step"] for r in read_metrics(out)] == [0]


def test_cli_resume_with_another_lora_rank_is_one_error_line(copy_of_run, env, tmp_path):
    """``python -m llm.train --resume --lora-rank 8`` over a rank-4 run: exit status 2 and one
    line naming the field, before the model loads (once an orbax traceback, exit 1)."""
    model_path, out = copy_of_run
    config = tmp_path / "run.json"
    config.write_text(json.dumps(_cfg(model_path, out).to_dict()))
    command = [sys.executable, "-m", "llm.train", "--config", str(config)]
    proc = subprocess.run(
        [*command, "--resume", "--lora-rank", "8"], env=env, cwd=REPO, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr == (
        "python -m llm.train: error: --resume: cannot resume: the run config differs from the "
        "checkpoint's in lora_rank (checkpoint 4, now 8)\n"
    )
