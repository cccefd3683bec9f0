"""`python -m llm.train`: flags and config files, one-line errors for bad options, an
end-to-end smoke run (train, evaluate, checkpoint, export, load the export in transformers)
and an exact resume after SIGKILL.

The subprocess runs share a persistent compilation cache so later runs skip most compiles.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from llm.models.tiny import make_tiny_checkpoint
from llm.rl.metrics import read_metrics
from llm.train import main

# The fast-compile flag of tests/conftest.py, for the subprocesses that set XLA_FLAGS.
O0 = " --xla_backend_optimization_level=0"

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "llama", "llama"))


def _flags(model_path, out_dir, **kw):
    flags = (
        dict(
            model_path=model_path,
            task="arithmetic",
            task_kwargs='{"num_examples": 64}',
            num_steps=3,
            prompts_per_step=2,
            samples_per_prompt=4,
            max_new_tokens=6,
            learning_rate=1e-2,
            refresh_every=2,
            eval_prompts=0,
            mesh="fsdp=2,tp=2",
            out_dir=str(out_dir),
            progress="false",
        )
        | kw
    )
    return [x for k, v in flags.items() for x in ("--" + k.replace("_", "-"), str(v))]


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--config",
        "--refresh-every",
        "--delta-v",
        "--mesh",
        "--micro-batches",
        "--coordinator-address",
        "--resume",
        "--export-hf",
        "--eval-pass-k",
    ):
        assert flag in text
    assert "behaviour params" in text


def test_config_file_then_flags(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "model_path: m\nnum_steps: 50\ndelta_v: -0.2\ntask_kwargs: {digits: 2}\n"
        "export_hf: true\nmesh: fsdp=2\n"
    )
    assert (
        main(
            [
                "--config",
                str(cfg),
                "--num-steps",
                "7",
                "--export-hf",
                "false",
                "--resume",
                "--mesh",
                "none",
                "--print-config",
            ]
        )
        == 0
    )
    got = json.loads(capsys.readouterr().out)
    assert got["num_steps"] == 7 and got["delta_v"] == -0.2
    assert got["task_kwargs"] == {"digits": 2}
    assert got["export_hf"] is False and got["resume"] is True and got["mesh"] is None
    bad = tmp_path / "bad.json"
    bad.write_text('{"model_path": "m", "learning_rat": 1}')
    assert _error(capsys, ["--config", str(bad), "--print-config"]) == (
        f"--config {bad}: unknown field 'learning_rat' (did you mean 'learning_rate'?)"
    )


# ---------------------------------------------------------------------- one-line errors

PROG = "python -m llm.train: error: "


def _error(capsys, argv) -> str:
    """Run the CLI in-process on a bad option: exit status 2, one line on stderr, no
    traceback, nothing on stdout; returns the line without the ``prog: error:`` prefix."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2, err
    assert out == "" and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(PROG), err
    return lines[0][len(PROG) :]


@pytest.fixture
def fake_model(tmp_path):
    """A folder that passes validate()'s model_path check (it only looks for config.json)."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return str(folder)


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--delta-v", "nan"], "--delta-v: must be a finite number, got nan"),
        (["--delta-v", "inf"], "--delta-v: must be a finite number, got inf"),
        (["--learning-rate", "inf"], "--learning-rate: must be a finite number >= 0, got inf"),
        (["--learning-rate", "-1"], "--learning-rate: must be a finite number >= 0, got -1.0"),
        (["--temperature", "nan"], "--temperature: must be a finite number > 0, got nan"),
        (["--temperature", "0"], "--temperature: must be a finite number > 0, got 0.0"),
        (
            ["--eval-temperature", "inf"],
            "--eval-temperature: must be a finite number >= 0, got inf",
        ),
        (["--grpo-epsilon", "nan"], "--grpo-epsilon: must be a finite number >= 0, got nan"),
        (["--max-grad-norm", "inf"], "--max-grad-norm: must be a finite number >= 0, got inf"),
        (["--weight-decay", "-0.1"], "--weight-decay: must be a finite number >= 0, got -0.1"),
        (["--adam-eps", "0"], "--adam-eps: must be a finite number > 0, got 0.0"),
        (["--adam-b2", "1"], "--adam-b2: must be in [0, 1), got 1.0"),
        (["--top-p", "nan"], "--top-p: must be in (0, 1], got nan"),
        (["--min-lr-ratio", "2"], "--min-lr-ratio: must be in [0, 1], got 2.0"),
        (["--is-truncation", "nan"], "--is-truncation: must be > 0 (inf: no truncation), got nan"),
        (
            ["--samples-per-prompt", "1"],
            "--samples-per-prompt: must be an integer >= 2 (G samples per prompt give the "
            "per-prompt baseline), got 1",
        ),
        (["--prompts-per-step", "0"], "--prompts-per-step: must be an integer >= 1, got 0"),
        (["--num-steps", "-3"], "--num-steps: must be an integer >= 0, got -3"),
        (["--num-steps", "abc"], "--num-steps: must be an integer, got 'abc'"),
        (["--num-steps", "1.5"], "--num-steps: must be an integer, got '1.5'"),
        (["--delta-v", "abc"], "--delta-v: must be a number, got 'abc'"),
        (["--eval-max-new-tokens", "x"], "--eval-max-new-tokens: must be an integer, got 'x'"),
        (["--resume", "maybe"], "--resume: must be true or false, got 'maybe'"),
        (
            ["--micro-batches", "3"],
            "--micro-batches: must divide prompts_per_step * samples_per_prompt = 64, got 3",
        ),
        (
            ["--loss", "asymer"],
            "--loss: must be one of asymre, grpo, is_reinforce, cispo, topr, got 'asymer' "
            "(did you mean 'asymre'?)",
        ),
        (
            ["--loss", "ppo"],
            "--loss: must be one of asymre, grpo, is_reinforce, cispo, topr, got 'ppo'",
        ),
        (
            ["--advantage-scale", "std"],
            "--advantage-scale: must be one of none, group_std, got 'std'",
        ),
        (["--kl-beta", "0.1"], "--kl-beta: must be 0 with loss=asymre (grpo only), got 0.1"),
        (
            ["--kl-beta", "-1", "--loss", "grpo"],
            "--kl-beta: must be a finite number >= 0, got -1.0",
        ),
        (
            ["--kl-beta", "inf", "--loss", "grpo"],
            "--kl-beta: must be a finite number >= 0, got inf",
        ),
        (
            ["--grpo-epsilon-high", "-0.1", "--loss", "grpo"],
            "--grpo-epsilon-high: must be a finite number >= 0 (or none: grpo_epsilon), got -0.1",
        ),
        (
            ["--grpo-epsilon-high", "0.3", "--loss", "is_reinforce"],
            "--grpo-epsilon-high: must be none with loss=is_reinforce (grpo only), got 0.3",
        ),
        (
            ["--leave-one-out", "--loss", "grpo"],
            "--leave-one-out: must be false with loss=grpo (asymre / is_reinforce / topr only), "
            "got True",
        ),
        (
            ["--advantage-scale", "group_std", "--loss", "grpo"],
            "--advantage-scale: must be none with loss=grpo (asymre / is_reinforce / topr "
            "only), got 'group_std'",
        ),
        (
            ["--task-kwargs", "{digits: 2}"],
            "--task-kwargs: must be a JSON object (Expecting property name enclosed in double "
            "quotes), got '{digits: 2}'",
        ),
        (["--task", "gsm8k"], "--data-path: is required by task=gsm8k, got None"),
        (
            ["--mesh", "fsdp=x"],
            "--mesh: mesh spec must look like 'fsdp=4,tp=2', got 'fsdp=x'",
        ),
        (
            ["--mesh", "dp=8"],
            "--mesh: unknown mesh axes ['dp']; expected some of ('fsdp', 'tp')",
        ),
        (
            ["--log-level", "loud"],
            "--log-level: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'loud'",
        ),
    ],
)
def test_bad_flag_is_one_line_error(flags, expected, fake_model, tmp_path, capsys):
    argv = ["--model-path", fake_model, "--out-dir", str(tmp_path / "run"), *flags]
    assert _error(capsys, argv) == expected


def test_bad_model_path_names_the_flag(fake_model, tmp_path, capsys):
    missing = tmp_path / "missing"
    assert _error(capsys, ["--model-path", str(missing)]) == (
        f"--model-path: must be an existing folder, got '{missing}'"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _error(capsys, ["--model-path", str(empty)]) == (
        f"--model-path: must be a Hugging Face model folder with a config.json, got '{empty}'"
    )
    assert _error(capsys, []) == "--model-path: is required (a Hugging Face model folder), got ''"


def test_bad_config_file_is_one_line_error(fake_model, tmp_path, capsys):
    def run(name, text, *flags):
        path = tmp_path / name
        path.write_text(text)
        return path, _error(capsys, ["--config", str(path), *flags])

    path, line = run("typo.yaml", f"model_path: {fake_model}\nlearning_rat: 1.0e-5\n")
    assert line == f"--config {path}: unknown field 'learning_rat' (did you mean 'learning_rate'?)"
    path, line = run("two.yaml", "learning_rat: 1\nzzz: 2\n")
    assert line == (
        f"--config {path}: unknown fields 'learning_rat' (did you mean 'learning_rate'?), 'zzz'"
    )
    path, line = run("broken.yaml", "model_path: [m\nnum_steps: 3\n")
    assert line.startswith(f"--config {path}: invalid YAML: ") and "line 2" in line
    path, line = run("broken.json", '{"num_steps": 3,}')
    assert line.startswith(f"--config {path}: invalid JSON: ") and "line 1" in line
    path, line = run("list.yaml", "- num_steps\n- 3\n")
    assert line == f"--config {path}: expected a mapping of TrainConfig fields, got list"
    path, line = run("value.yaml", "num_steps: abc\n")
    assert line == f"--config {path}: num_steps: must be an integer, got 'abc'"
    path, line = run("float.json", '{"num_steps": 2.5}')
    assert line == f"--config {path}: num_steps: must be an integer, got 2.5"
    # a value from the file that validate() refuses names the file; the same given as a flag
    # names the flag
    path, line = run("g1.yaml", f"model_path: {fake_model}\nsamples_per_prompt: 1\n")
    assert line.startswith(f"--config {path}: samples_per_prompt: must be an integer >= 2")
    path, line = run("g2.yaml", f"model_path: {fake_model}\n", "--samples-per-prompt", "1")
    assert line.startswith("--samples-per-prompt: must be an integer >= 2")
    missing = tmp_path / "nope.yaml"
    assert _error(capsys, ["--config", str(missing)]) == f"--config {missing}: no such file"
    assert _error(capsys, ["--config", str(tmp_path)]).startswith(
        f"--config {tmp_path}: is not a file"
    )


def test_argparse_errors_are_one_line(capsys):
    line = _error(capsys, ["--no-such-flag"])
    assert line == "unrecognized arguments: --no-such-flag"
    assert _error(capsys, ["--num-steps"]) == "argument --num-steps: expected one argument"


@pytest.mark.skipif(jax.device_count() != 8, reason="needs the 8 CPU devices of conftest")
def test_mesh_must_use_every_device(fake_model, tmp_path, capsys):
    argv = ["--model-path", fake_model, "--out-dir", str(tmp_path / "run")]
    assert _error(capsys, [*argv, "--mesh", "fsdp=3,tp=2"]) == (
        "--mesh: mesh fsdp=3,tp=2 uses 6 of the 8 devices; give a mesh over all of them "
        "(e.g. fsdp=-1,tp=2) or allow a subset (allow_subset=True, --mesh-subset)"
    )
    assert _error(capsys, [*argv, "--mesh", "fsdp=8,tp=2"]) == (
        "--mesh: mesh fsdp=8,tp=2 needs 16 devices, have 8"
    )
    assert _error(capsys, [*argv, "--mesh", "fsdp=-1,tp=3"]) == (
        "--mesh: 8 devices are not divisible by tp=3 = 3"
    )


def test_internal_errors_keep_their_traceback(fake_model, tmp_path, monkeypatch):
    """Only configuration errors become one line; a bug in the trainer propagates."""
    import llm.trainer

    def broken(cfg):
        raise RuntimeError("a bug in the trainer")

    monkeypatch.setattr(llm.trainer, "train", broken)
    argv = ["--model-path", fake_model, "--out-dir", str(tmp_path / "run"), "--progress", "false"]
    with pytest.raises(RuntimeError, match="a bug in the trainer"):
        main(argv)
    # a ValueError from inside the run that is not a ConfigError is not swallowed either
    monkeypatch.setattr(llm.trainer, "train", lambda cfg: int("x"))
    with pytest.raises(ValueError, match="invalid literal"):
        main(argv)


def test_mesh_error_from_a_fresh_process(fake_model, tmp_path):
    """End to end in a new interpreter (XLA_FLAGS is read when jax is imported): 8 devices,
    a mesh over 6 of them, exit status 2, one line on stderr, no traceback."""
    env = dict(os.environ)
    env |= {
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8" + O0,
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    }
    cmd = [sys.executable, "-m", "llm.train", "--model-path", fake_model]
    cmd += ["--out-dir", str(tmp_path / "run"), "--mesh", "fsdp=3,tp=2"]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        PROG + "--mesh: mesh fsdp=3,tp=2 uses 6 of the 8 devices; give a mesh over all of them "
        "(e.g. fsdp=-1,tp=2) or allow a subset (allow_subset=True, --mesh-subset)"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_cli_smoke_trains_evaluates_checkpoints_exports(model_path, env, tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "llm.train",
        *_flags(
            model_path,
            out,
            eval_every=2,
            eval_prompts=4,
            eval_pass_k=2,
            eval_top_p=1.0,
            checkpoint_every=2,
            keep_checkpoints=1,
            export_hf="true",
        ),
    ]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert (
        "eval_accuracy" in rows[1] and "eval_pass@2" in rows[2] and "eval_accuracy" not in rows[0]
    )
    for key in (
        "reward_mean",
        "accuracy",
        "zero_variance_groups",
        "logratio_abs",
        "ratio_max",
        "entropy",
        "grad_norm",
        "lr",
        "step_time",
        "tokens_per_s",
        "loss",
    ):
        assert all(np.isfinite(r[key]) for r in rows), key
    assert rows[1]["logratio_abs"] > 0 and rows[2]["logratio_abs"] < 1e-6  # refresh_every=2
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["3"]  # keep the last 1
    assert list((out / "tensorboard").glob("events.out.tfevents*"))

    # the export loads in transformers and computes what our model computes
    import torch
    from transformers import AutoModelForCausalLM

    from llm.models.hf_io import load_hf

    hf = AutoModelForCausalLM.from_pretrained(out / "hf", dtype=torch.float32)
    ours, _ = load_hf(out / "hf")
    ids = np.array([[1, 40, 41, 42, 17, 18]], np.int64)
    with torch.no_grad():
        ref = hf(torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours(ids.astype(np.int32))), ref, atol=1e-4, rtol=1e-4)
    init, _ = load_hf(model_path)
    assert not np.allclose(np.asarray(init.embed[...]), np.asarray(ours.embed[...]))


def _safetensors(path):
    from safetensors.numpy import load_file

    return load_file(str(pathlib.Path(path) / "model.safetensors"))


@pytest.mark.slow
def test_resume_after_sigkill_is_exact(model_path, env, tmp_path, killed_before_checkpoint):
    steps, kill_at = 12, 6
    common = dict(
        num_steps=steps,
        checkpoint_every=2,
        keep_checkpoints=2,
        export_hf="true",
        tensorboard="false",
    )
    ref_out, out = tmp_path / "uninterrupted", tmp_path / "killed"
    cli = lambda out_dir: _flags(model_path, out_dir, **common)
    run = lambda out_dir, *extra: [sys.executable, "-m", "llm.train", *cli(out_dir), *extra]
    proc = subprocess.run(
        run(ref_out), env=env, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    # SIGKILLed just before checkpoint 6: updates 0..5 done, checkpoints 2 and 4 on disk
    victim = subprocess.run(
        killed_before_checkpoint(kill_at, cli(out)), env=env, cwd=REPO,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert victim.returncode == -signal.SIGKILL, victim.stderr[-3000:]
    ckpts = out / "checkpoints"
    assert sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) == [2, 4]
    assert not (out / "hf").exists()
    assert [r["step"] for r in read_metrics(out)] == list(range(kill_at))

    proc = subprocess.run(
        run(out, "--resume"), env=env, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed from {ckpts} at step 4" in proc.stderr

    a, b = _safetensors(ref_out / "hf"), _safetensors(out / "hf")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # the metrics file reads as one run (rows 4 and 5 of the killed run dropped), equal to
    # the uninterrupted one
    ref_rows, rows = read_metrics(ref_out), read_metrics(out)
    assert [r["step"] for r in rows] == list(range(steps))
    for key in ("reward_mean", "loss", "grad_norm", "logratio_abs"):
        assert [r[key] for r in rows] == [r[key] for r in ref_rows], key
