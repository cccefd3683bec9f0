"""``python -m llm.plan``: the planned bytes against a hand count, FLOPs against XLA's, errors.

The plan of a one-layer tiny Llama on fsdp=2,tp=2 runs in-process on the 8 CPU devices of
tests/conftest.py (the plan uses the first 4). Hand counts: every matrix of the tiny config has
its "embed" axis on fsdp and its vocab / heads / kv heads / MLP axis on tp, so it splits over
all 4 devices; the norms are replicated. AdamW keeps two moments (mu, nu) in each trainable
param's dtype, plus a few scalars. Parameter counts are checked against the model that
``llm.models`` builds and the published totals, activations against the residuals JAX saves.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from jax.ad_checkpoint import print_saved_residuals

from llm.models.config import ModelConfig
from llm.models.lora import LoRASpec, add_lora
from llm.models.sharding import make_mesh
from llm.models.tiny import FAMILIES, tiny_config
from llm.models.transformer import Transformer, set_runtime_options
from llm.padding import length_bucket
from llm.plan import counts, programs
from llm.plan.__main__ import main
from llm.plan.hardware import ACCELERATORS, price_step
from llm.plan.shipped import SHIPPED_CONFIGS, model_config_path
from llm.rl.config import TrainConfig
from llm.rl.state import lora_spec

jax.devices()  # the backend starts here with conftest's 8 devices: main() then never re-executes

PUBLISHED_PARAMS = {  # the model cards' / config.json's counts
    "qwen2.5-0.5b": 494_032_768,
    "qwen2.5-1.5b": 1_543_714_304,
    "qwen2.5-7b": 7_615_616_512,
    "llama-3.1-8b": 8_030_261_248,
}
SCALARS = 64  # at most this many bytes of optimizer scalars (counts, hyperparams, flags)


def _tiny(tmp_path, **overrides) -> tuple[ModelConfig, str]:
    config = tiny_config("llama", num_hidden_layers=1, **overrides)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_hf_dict()))
    return config, str(path)


def _hand_param_bytes(c: ModelConfig, devices: int, itemsize: int = 4) -> float:
    D, F, V, H, K, Dh = (c.hidden_size, c.intermediate_size, c.vocab_size,
                         c.num_attention_heads, c.num_key_value_heads, c.head_dim)  # fmt: skip
    matrices = 2 * V * D + c.num_hidden_layers * (2 * D * H * Dh + 2 * D * K * Dh + 3 * D * F)
    norms = (2 * c.num_hidden_layers + 1) * D
    return itemsize * (matrices / devices + norms)


@pytest.fixture(scope="module")
def tiny_plan(tmp_path_factory):
    """(config, the JSON that ``main`` printed) of the tiny plan, compiled once."""
    config, path = _tiny(tmp_path_factory.mktemp("plan"))
    argv = ["--model-config", path, "--mesh", "fsdp=2,tp=2", "--prompts", "2", "--samples", "4"]
    argv += ["--max-new-tokens", "8", "--prompt-tokens", "16", "--json"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return config, json.loads(out.getvalue())


@pytest.mark.slow  # the tiny plan compiles three programs: about 15 s on 2 busy cores
def test_plan_bytes_match_the_hand_count(tiny_plan):
    config, plan = tiny_plan
    assert plan["devices"] == 4 and plan["mesh"] == {"fsdp": 2, "tp": 2}
    params = plan["params_bytes_per_device"]
    assert params == _hand_param_bytes(config, 4)
    assert plan["trainable_bytes_per_device"] == params
    assert plan["gradient_bytes_per_device"] == params
    assert 0 < plan["optimizer_bytes_per_device"] - 2 * params < SCALARS
    # one micro-batch's rows over fsdp=2: 1 prompt row of L' tokens + 4 rows of N - 1 = 7
    queries = math.ceil((2 * length_bucket(16) + 8 * 7) / 2)
    expected = counts.activation_bytes(config, queries, length_bucket(16) + 8, "none", 4)
    assert plan["activation_bytes_per_device"] == expected["peak"]
    # the sampler's cache [L, B', S, K, Dh] x (k, v): rows over fsdp, kv heads over tp
    B, S = 8, 16 + 8
    whole = 2 * config.num_hidden_layers * B * S * config.num_key_value_heads * config.head_dim * 4
    assert plan["kv_cache_bytes_per_device"] == whole / 4
    assert plan["peak_bytes_per_device"] >= 3 * params + plan["kv_cache_bytes_per_device"]
    assert set(plan["roofline"]) == set(ACCELERATORS)
    for chip in plan["roofline"].values():
        assert chip["step_seconds"] > 0 and 0 < chip["mfu"] <= 1 and chip["fits_memory"]


@pytest.mark.slow
def test_plan_flops_agree_with_xla(tiny_plan):
    """The hand count of the update is XLA's count of the compiled step within 10%."""
    _, plan = tiny_plan
    assert plan["flops_source"] == dict.fromkeys(
        ("update", "prefill", "decode"), "xla_cost_analysis"
    )
    update = plan["phases"]["update"]
    assert update["flops_per_device"] == pytest.approx(update["hand"]["flops_per_device"], rel=0.1)
    assert plan["flops_per_step"] >= plan["model_flops_per_step"] > 0


def test_lora_optimizer_holds_the_adapters_moments():
    config = tiny_config("llama", num_hidden_layers=1)
    cfg = TrainConfig().replace(
        mesh="fsdp=2", lora_rank=4, prompts_per_step=2, samples_per_prompt=2
    )
    run = programs.abstract_run(config, cfg, make_mesh("fsdp=2", allow_subset=True))
    sizes = programs.update_state(run, cfg).sizes
    D, F, H, K, Dh, r = (config.hidden_size, config.intermediate_size, config.num_attention_heads,
                         config.num_key_value_heads, config.head_dim, 4)  # fmt: skip
    # A [in, r], B [r, out]: only the "embed" axis (D) is split (fsdp=2); rank, heads, mlp whole
    per_layer = (D * r / 2 + r * H * Dh) + 2 * (D * r / 2 + r * K * Dh) + (H * Dh * r + r * D / 2)
    per_layer += 2 * (D * r / 2 + r * F) + (F * r + r * D / 2)
    assert sizes["trainable"] == 4 * config.num_hidden_layers * per_layer
    assert sizes["frozen"] == _hand_param_bytes(config, 2)
    assert 0 < sizes["optimizer"] - 2 * sizes["trainable"] < SCALARS
    lora = counts.param_counts(config, lora_spec(cfg))
    assert lora.adapters == config.num_hidden_layers * r * (
        3 * D + H * Dh + 2 * K * Dh + H * Dh + D + 2 * (D + F) + F + D
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_param_counts_are_those_of_the_built_model(family):
    """The counts of `llm.plan.counts` against the weights of the model itself (abstract)."""
    config = tiny_config(family, num_hidden_layers=2)
    spec = LoRASpec(rank=3, alpha=6.0, targets=("q", "v", "down"))

    def leaves(lora):
        def build():
            model = Transformer(config, rngs=nnx.Rngs(0))
            return add_lora(model, spec, rngs=nnx.Rngs(1)) if lora else model

        state = nnx.state(nnx.eval_shape(build), nnx.Param)
        return sum(math.prod(x.shape) for x in jax.tree.leaves(state))

    plain, with_lora = leaves(False), leaves(True)
    assert counts.param_counts(config).total == plain
    assert counts.param_counts(config, spec).adapters == with_lora - plain
    assert counts.param_counts(config, spec).total == with_lora


_ITEMSIZE = {"f32": 4, "bf16": 2, "f16": 2, "i32": 4, "s32": 4, "bool": 1, "pred": 1}
_RESIDUAL = re.compile(r"(\w+)\[([\d,]*)\] (.*)")


def _saved_residual_bytes(config: ModelConfig, rows: int, length: int, remat: str) -> int:
    """Bytes of what JAX saves for the backward pass of the model on [rows, length] tokens
    (`jax.ad_checkpoint.print_saved_residuals`), the weights themselves left out."""
    model = set_runtime_options(Transformer(config, rngs=nnx.Rngs(0)), remat=remat)
    graphdef, state = nnx.split(model)
    tokens = jnp.zeros((rows, length), jnp.int32)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        print_saved_residuals(lambda s: nnx.merge(graphdef, s)(tokens).sum(), state)
    total = 0
    for line in printed.getvalue().splitlines():
        dtype, shape, what = _RESIDUAL.match(line).groups()
        if not what.startswith("from the argument"):
            total += _ITEMSIZE[dtype] * math.prod(int(n) for n in shape.split(",") if n)
    return total


@pytest.mark.parametrize("remat", ["none", "layer", "dots"])
@pytest.mark.parametrize("sizes", [{}, {"hidden_size": 96, "intermediate_size": 80}])
def test_activation_count_is_what_jax_saves(remat, sizes):
    """The hand count of the kept activations against JAX's own list of residuals (exact
    under remat; within 1% without, the norms' broadcast scales being rounded)."""
    config = tiny_config("llama", num_hidden_layers=3, **sizes)
    rows, length = 3, 12
    hand = counts.activation_bytes(config, rows * length, length, remat, 4)
    measured = _saved_residual_bytes(config, rows, length, remat)
    assert hand["kept"] == pytest.approx(measured, rel=0.01 if remat == "none" else 0)
    plain = counts.activation_bytes(config, rows * length, length, "none", 4)
    if remat != "none":  # the backward rebuilds one layer's residuals at a time
        assert hand["kept"] < hand["peak"] < plain["kept"] == plain["peak"]


@pytest.mark.parametrize("name", sorted(SHIPPED_CONFIGS))
def test_shipped_configs_have_the_published_sizes(name):
    assert ModelConfig.from_json(model_config_path(name)).num_params() == PUBLISHED_PARAMS[name]


def test_matmul_loops_counts_only_loops_that_multiply():
    def scanned(w, x):
        noise = jax.random.uniform(jax.random.key(0), (4,)).sum()  # a threefry loop, no matmul
        return jax.lax.scan(lambda c, xi: (c + (xi @ w).sum(), None), noise, x)[0]

    w, x = jnp.ones((8, 8)), jnp.ones((3, 4, 8))
    loop = jax.jit(scanned).lower(w, x).compile()
    plain = jax.jit(lambda w, x: (x[0] @ w).sum()).lower(w, x).compile()
    assert programs.matmul_loops(loop.as_text()) == 1
    assert programs.matmul_loops(plain.as_text()) == 0


def test_roofline_is_the_slower_of_compute_and_memory():
    h100 = ACCELERATORS["H100"]
    flops, moved = 989.4e12, 3.35e12 * 2  # 1 s of compute, 2 s of memory on an H100
    priced = price_step({"p": (flops, moved, 3, flops / 2)}, 1e9, h100, "bfloat16")
    assert priced["phases"]["p"]["bound"] == "memory"
    assert priced["step_seconds"] == pytest.approx(6.0)
    assert priced["mfu"] == pytest.approx(0.25)
    assert priced["fits_memory"]


@pytest.mark.parametrize(
    "flags, blamed",
    [
        (["--mesh", "fsdp=8,pp=2"], "--mesh"),
        (["--mesh", "fsdp=-1"], "--mesh"),
        (["--mesh", "fsdp=8", "--samples", "1"], "--samples"),
        (["--mesh", "fsdp=8", "--lora-rank", "-1"], "--lora-rank"),
        (["--mesh", "fsdp=8", "--micro-batches", "3"], "--micro-batches"),
        (["--mesh", "fsdp=8", "--accelerator", "A100"], "--accelerator"),
        (["--mesh", "fsdp=8", "--max-new-tokens", "200000"], "--max-new-tokens"),
        (["--mesh", "fsdp=8", "--prompt-tokens", "0"], "--prompt-tokens"),
    ],
)
def test_bad_flags_are_one_error_line(flags, blamed, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-config", "qwen2.5-7b", *flags])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"python -m llm.plan: error: {blamed}: ")


def test_a_missing_model_config_is_blamed(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--model-config", str(tmp_path / "nope"), "--mesh", "fsdp=2"])
    assert capsys.readouterr().err.startswith("python -m llm.plan: error: --model-config: ")


def _env() -> dict:
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    return env | {"PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.mark.slow
@pytest.mark.parametrize("started_first", [False, True])
def test_the_command_makes_its_devices(started_first, tmp_path):
    """The CLI sets XLA_FLAGS itself; a process whose backend already started with one device
    re-executes with the mesh's."""
    _, path = _tiny(tmp_path)
    argv = ["--model-config", path, "--mesh", "fsdp=2,tp=2", "--max-new-tokens", "4", "--json"]
    code = "import jax, sys; jax.devices(); from llm.plan.__main__ import main; main(sys.argv[1:])"
    command = ["-c", code] if started_first else ["-m", "llm.plan"]
    result = subprocess.run([sys.executable, *command, *argv], env=_env(), capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    plan = json.loads(result.stdout)
    assert plan["devices"] == 4 and math.isfinite(plan["peak_bytes_per_device"])
