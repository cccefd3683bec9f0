"""LoRA in the trainer: only the adapters train, mu = the base + stale adapters, the base is
held once, sharded adapters, no compilation after step 0, PEFT export, CLI flags.

One in-process run (module fixture) on the tiny random qwen2 model over a simulated
fsdp=4,tp=2 mesh (tests/conftest.py), with GRPO + a KL term (so a reference exists),
refresh_every=2 and the export on; the tests read its state, files and compile log.
"""

import json
import logging
import pathlib

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec

from llm.models.hf_io import load_hf
from llm.models.lora import add_lora
from llm.models.peft_io import load_peft_adapter
from llm.models.tiny import make_tiny_checkpoint
from llm.rl.optimizer import optimizer_moments
from llm.train import main
from llm.trainer import TrainConfig, train

RANK, STEPS = 4, 4
LETTERS = set("abcdefghijklmnopqrstuvwxyz")


def letter_reward(prompts, completions, answer, **columns):
    """+1 when the completion starts with a lowercase letter (reward variance from step 0)."""
    return [1.0 if c[:1] in LETTERS else -1.0 for c in completions]


IDS = np.array([[1, 40, 41, 42, 17, 18, 19, 5]], np.int64)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(cfg, final state, rows, {step: compilations}, host copies of each step's adapters)."""
    root = tmp_path_factory.mktemp("lora")
    model_path = str(make_tiny_checkpoint(root / "qwen2", "qwen2"))
    cfg = TrainConfig(
        model_path=model_path,
        task_kwargs={"num_examples": 64},
        num_steps=STEPS,
        prompts_per_step=4,
        samples_per_prompt=4,
        max_new_tokens=6,
        loss="grpo",
        kl_beta=0.1,
        learning_rate=2e-2,
        refresh_every=2,
        eval_prompts=0,
        mesh="fsdp=4,tp=2",
        out_dir=str(root / "run"),
        progress=False,
        tensorboard=False,
        export_hf=True,
        lora_rank=RANK,
        lora_alpha=8.0,
    )
    compiled_at, now, seen = {}, {"step": 0}, []

    def callback(step, params, behaviour, row):
        now["step"] = step + 1
        seen.append({k: np.asarray(v) for k, v in _adapters(params).items()})

    class Count(logging.Handler):
        def emit(self, record):
            if "ompiling" in record.getMessage():
                compiled_at[now["step"]] = compiled_at.get(now["step"], 0) + 1

    handler, logger = Count(level=logging.DEBUG), logging.getLogger("jax")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        with jax.log_compiles(True):
            rows, state = train(cfg, reward_fn=letter_reward, callback=callback, return_state=True)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return cfg, state, rows, compiled_at, seen


def _adapters(params):
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {jax.tree_util.keystr(p): x for p, x in flat if "_lora" in jax.tree_util.keystr(p)}


@pytest.mark.slow
def test_only_the_adapters_train_and_hold_optimizer_state(run):
    cfg, state, rows, _, _ = run
    assert all(np.isfinite(r["loss"]) and r["finite"] for r in rows)
    adam = optimizer_moments(state.opt_state)[1][0]
    moments = jax.tree.leaves((adam.mu, adam.nu))
    adapters = _adapters(state.params)
    n_adapter = sum(x.size for x in adapters.values())
    # 2 layers x (q 64*4+4*64, k, v 64*4+4*32, o 64*4+4*64, gate/up 64*4+4*128, down)
    assert n_adapter == 2 * (512 + 384 + 384 + 512 + 768 + 768 + 768) == 8192
    assert sum(x.size for x in moments) == 2 * n_adapter  # Adam's mu and nu, adapters only
    base, _ = load_hf(cfg.model_path)
    base_params = nnx.to_pure_dict(nnx.state(base))
    frozen = {k: v for k, v in _params_by_path(state.params).items() if "_lora" not in k}
    assert frozen.keys() == _params_by_path(base_params).keys()
    for key, value in _params_by_path(base_params).items():
        np.testing.assert_array_equal(np.asarray(frozen[key]), np.asarray(value), err_msg=key)
    bs = [np.abs(np.asarray(x)).max() for k, x in adapters.items() if k.endswith("['b']")]
    assert min(bs) > 0  # every B moved away from 0


def _params_by_path(params):
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {jax.tree_util.keystr(p): x for p, x in flat}


@pytest.mark.slow
def test_behaviour_is_the_shared_base_plus_stale_adapters(run):
    _, state, rows, _, seen = run
    params, behaviour, reference = map(_params_by_path, state[:1] + state[2:4])
    for key in params:  # one set of base arrays: the very same objects
        if "_lora" not in key:
            assert params[key] is behaviour[key] is reference[key], key
    # refresh_every=2: mu was refreshed at step 2, so after step 3 it holds step 2's adapters
    step2 = seen[1]
    for key, value in _adapters(state.behaviour).items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(step2[key]), err_msg=key)
    assert rows[1]["logratio_abs"] > 0 and rows[2]["logratio_abs"] < 1e-5
    # the KL reference is base + initial adapters: B = 0
    for key, value in _adapters(state.reference).items():
        if key.endswith("['b']"):
            np.testing.assert_array_equal(np.asarray(value), 0.0, err_msg=key)


@pytest.mark.slow
def test_adapters_and_their_moments_follow_the_rule_table(run):
    _, state, _, _, _ = run
    attn = state.params["layers"][0]["attn"]
    spec = lambda x: x.sharding.spec
    assert spec(attn["q"]) == PartitionSpec("fsdp", "tp", None)
    assert spec(attn["q_lora"]["a"]) == PartitionSpec("fsdp", None)
    assert spec(attn["q_lora"]["b"]) == PartitionSpec(None, "tp", None)
    assert spec(attn["o_lora"]["a"]) == PartitionSpec("tp", None, None)
    assert spec(attn["o_lora"]["b"]) == PartitionSpec(None, "fsdp")
    mlp = state.params["layers"][1]["mlp"]
    assert spec(mlp["down_lora"]["a"]) == PartitionSpec("tp", None)
    assert spec(mlp["up_lora"]["b"]) == PartitionSpec(None, "tp")
    adam = optimizer_moments(state.opt_state)[1][0]
    for moments in (adam.mu, adam.nu):
        for key, value in _params_by_path(moments).items():
            assert value.sharding == _params_by_path(state.params)[key].sharding, key
    assert len(state.params["embed"].sharding.device_set) == 8


@pytest.mark.slow
def test_no_compilation_after_the_first_step(run):
    _, _, _, compiled_at, _ = run
    assert compiled_at.get(0, 0) >= 1  # the counter sees step 0's compilations
    assert set(compiled_at) <= {0, STEPS}, compiled_at  # STEPS: the export after the loop


@pytest.mark.slow
def test_peft_adapter_and_merged_export_compute_the_trained_policy(run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg, state, _, _, _ = run
    out = pathlib.Path(cfg.out_dir)
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == RANK and config["lora_alpha"] == 8.0
    assert config["target_modules"] == [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
    ]  # fmt: skip
    from safetensors.numpy import load_file

    tensors = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    q = "base_model.model.model.layers.0.self_attn.q_proj"
    assert tensors[f"{q}.lora_A.weight"].shape == (RANK, 64)
    assert tensors[f"{q}.lora_B.weight"].shape == (64, RANK)  # [H * Dh, r]

    f32 = torch.float32
    base = AutoModelForCausalLM.from_pretrained(cfg.model_path, dtype=f32)
    merged = AutoModelForCausalLM.from_pretrained(out / "hf", dtype=f32)
    peft_model = PeftModel.from_pretrained(base, out / "adapter")
    with torch.no_grad():
        peft_logits = peft_model(torch.from_numpy(IDS)).logits.numpy()
        merged_logits = merged(torch.from_numpy(IDS)).logits.numpy()
    graphdef = nnx.graphdef(_lora_model(cfg))
    ours = nnx.merge(graphdef, jax.tree.map(np.asarray, state.params))
    ours_logits = np.asarray(ours(IDS.astype(np.int32)))
    base_logits = np.asarray(load_hf(cfg.model_path)[0](IDS.astype(np.int32)))
    assert np.abs(ours_logits - base_logits).max() > 1e-2  # the adapters do something
    np.testing.assert_allclose(peft_logits, ours_logits, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(merged_logits, ours_logits, atol=1e-4, rtol=1e-4)
    # and back: our loader fills adapters on the base model
    loaded = load_peft_adapter(load_hf(cfg.model_path)[0], out / "adapter")
    np.testing.assert_allclose(np.asarray(loaded(IDS.astype(np.int32))), ours_logits, atol=1e-5)


def _lora_model(cfg):
    from llm.rl.state import lora_spec

    model, _ = load_hf(cfg.model_path)
    return add_lora(model, lora_spec(cfg), rngs=nnx.Rngs(0))


# ---------------------------------------------------------------------- flags

PROG = "python -m llm.train: error: "


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--lora-rank", "-1"], "--lora-rank: must be an integer >= 0, got -1"),
        (["--lora-rank", "2.5"], "--lora-rank: must be an integer, got '2.5'"),
        (
            ["--lora-rank", "4", "--lora-alpha", "0"],
            "--lora-alpha: must be a finite number > 0 (or none: 2 * lora_rank), got 0.0",
        ),
        (["--lora-alpha", "16"], "--lora-alpha: needs lora_rank > 0, got 16.0"),
        (
            ["--lora-rank", "4", "--lora-targets", "q,w"],
            "--lora-targets: must be distinct names among q,k,v,o,gate,up,down separated by "
            "commas, got 'q,w'",
        ),
        (
            ["--lora-rank", "4", "--lora-targets", "q,q"],
            "--lora-targets: must be distinct names among q,k,v,o,gate,up,down separated by "
            "commas, got 'q,q'",
        ),
    ],
)
def test_bad_lora_flag_is_one_line_error(flags, expected, tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-path", str(model), "--out-dir", str(tmp_path / "run"), *flags])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and out == "" and "Traceback" not in err
    assert err.splitlines() == [PROG + expected]


def test_lora_flags_reach_the_config(capsys):
    argv = ["--lora-rank", "8", "--lora-alpha", "16", "--lora-targets", "q,v", "--print-config"]
    assert main(["--model-path", "m", *argv]) == 0
    got = json.loads(capsys.readouterr().out)
    assert (got["lora_rank"], got["lora_alpha"], got["lora_targets"]) == (8, 16.0, "q,v")
    assert TrainConfig().lora_rank == 0  # full fine-tuning by default


# ---------------------------------------------------------------------- memory script


@pytest.mark.slow
def test_lora_memory_script_counts_without_allocating(capsys):
    """benchmarks/lora_memory.py on Qwen2.5-0.5B shapes (eval_shape only): r=16 on every
    projection trains 8,798,208 parameters (what PEFT reports for this model) and the run
    state shrinks from 3 weight copies to ~1."""
    import importlib.util

    path = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "lora_memory.py"
    module_spec = importlib.util.spec_from_file_location("lora_memory", path)
    lora_memory = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(lora_memory)
    full, lora = lora_memory.main(["--ranks", "16", "--no-compile"])
    assert "| trainable_params | 494,032,768 | 8,798,208 |" in capsys.readouterr().out
    assert lora["frozen_params"] == full["trainable_params"] == 494_032_768
    assert full["run_state_GiB"] == pytest.approx(4 * full["params_GiB"])  # params, m, v, mu
    assert lora["opt_state_GiB"] < 0.02 * full["opt_state_GiB"]
    assert lora["run_state_GiB"] < 0.3 * full["run_state_GiB"]
