"""load_hf / save_hf: round trips with transformers, sharded files, bf16, and bad inputs."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from llm.models.config import ModelConfig  # noqa: E402
from llm.models.hf_io import INDEX_FILE, load_hf, save_hf  # noqa: E402
from llm.models.hf_names import tensor_specs  # noqa: E402
from llm.models.tiny import make_tiny_checkpoint, random_model, tiny_config  # noqa: E402

TOL = 1e-4


@nnx.jit
def _forward(model, tokens):
    return model(tokens)


def _torch_logits(model, tokens):
    with torch.no_grad():
        return model(torch.tensor(np.asarray(tokens))).logits.float().numpy()


def _state_arrays(model):
    return {path: np.asarray(v.get_value()) for path, v in nnx.to_flat_state(nnx.state(model))}


@pytest.fixture(scope="module")
def tokens():
    return np.random.default_rng(0).integers(0, 320, (2, 16)).astype(np.int32)


FAMILIES = ("llama", "qwen2", "qwen3", "mistral", "gemma3")


@pytest.mark.parametrize("family", FAMILIES)
def test_save_hf_then_transformers_loads_identical_logits(family, tmp_path, tokens):
    model = random_model(tiny_config(family), seed=3)
    path = save_hf(model, model.config, tmp_path / "out")
    torch_model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert type(torch_model).__name__.lower().startswith(family)
    np.testing.assert_allclose(
        _torch_logits(torch_model.eval(), tokens),
        np.asarray(_forward(model, tokens)),
        atol=TOL,
        rtol=0,
    )
    again, config = load_hf(path)
    assert config == model.config
    for path_, value in _state_arrays(model).items():
        np.testing.assert_array_equal(_state_arrays(again)[path_], value)


@pytest.mark.parametrize("family", FAMILIES)
def test_save_pretrained_then_load_hf_identical_logits(family, tmp_path, tokens):
    fields = tiny_config(family).to_hf_dict()
    model_type = fields.pop("model_type")
    del fields["architectures"]
    hf_config = transformers.AutoConfig.for_model(model_type, **fields)
    torch.manual_seed(0)
    torch_model = transformers.AutoModelForCausalLM.from_config(hf_config).eval()
    with torch.no_grad():  # HF init leaves norms at 1 and biases at 0: randomise them
        for name, p in torch_model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    torch_model.save_pretrained(tmp_path / "hf")
    model, config = load_hf(tmp_path / "hf")
    assert config == tiny_config(family).replace(initializer_range=config.initializer_range)
    np.testing.assert_allclose(
        np.asarray(_forward(model, tokens)), _torch_logits(torch_model, tokens), atol=TOL, rtol=0
    )


def test_multimodal_gemma3_folder_loads_its_text_model(tmp_path, tokens):
    """A Gemma3ForConditionalGeneration folder (config.json model_type "gemma3"): load_hf
    reads text_config and the language model's tensors, skips the vision tower, and gives
    transformers' text-only logits; the tensor prefixes of either layout are read."""
    text = tiny_config("gemma3").to_hf_dict()
    del text["architectures"]
    vision = dict(
        model_type="siglip_vision_model",
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )
    hf_config = transformers.Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=1,
        image_token_index=300,
        boi_token_index=298,
        eoi_token_index=299,
    )
    torch.manual_seed(0)
    torch_model = transformers.Gemma3ForConditionalGeneration(hf_config).eval()
    with torch.no_grad():
        for name, p in torch_model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    torch_model.save_pretrained(tmp_path / "mm")
    model, config = load_hf(tmp_path / "mm")
    assert config == tiny_config("gemma3").replace(initializer_range=config.initializer_range)
    np.testing.assert_allclose(
        np.asarray(_forward(model, tokens)),
        _torch_logits(torch_model, tokens),
        atol=TOL,
        rtol=0,
    )

    def to_v5_prefix(t):  # language_model.model.X -> model.language_model.X
        for name in [n for n in t if n.startswith("language_model.model.")]:
            t["model.language_model." + name[len("language_model.model.") :]] = t.pop(name)

    _rewrite_tensors(tmp_path / "mm", to_v5_prefix)
    again, _ = load_hf(tmp_path / "mm")
    for p, value in _state_arrays(model).items():
        np.testing.assert_array_equal(_state_arrays(again)[p], value)


def test_sharded_checkpoint_round_trip(tmp_path, tokens):
    model = random_model(tiny_config("llama"), seed=1)
    path = save_hf(model, None, tmp_path / "sharded", max_shard_bytes=40_000)
    index = json.loads((path / INDEX_FILE).read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 2 and not (path / "model.safetensors").exists()
    assert set(index["weight_map"]) == set(tensor_specs(model.config))
    assert index["metadata"]["total_size"] == 4 * model.config.num_params()
    again, _ = load_hf(path)
    for p, value in _state_arrays(model).items():
        np.testing.assert_array_equal(_state_arrays(again)[p], value)
    torch_model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    np.testing.assert_allclose(
        _torch_logits(torch_model.eval(), tokens),
        np.asarray(_forward(model, tokens)),
        atol=TOL,
        rtol=0,
    )


def test_bfloat16_checkpoint_is_read_exactly(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "bf16", "qwen2", dtype="bfloat16")
    assert json.loads((path / "config.json").read_text())["dtype"] == "bfloat16"
    torch_model = transformers.AutoModelForCausalLM.from_pretrained(path)
    ref = torch_model.model.layers[1].self_attn.k_proj.weight.detach()
    assert ref.dtype == torch.bfloat16
    ref = ref.float().numpy()  # [K*Dh, D]
    as_bf16, _ = load_hf(path, dtype="bfloat16")
    as_f32, config = load_hf(path)  # default float32: exact upcast of the stored bf16 values
    k16, k32 = as_bf16.layers[1].attn.k[...], as_f32.layers[1].attn.k[...]
    assert k16.dtype == jnp.bfloat16 and k32.dtype == jnp.float32
    expected = ref.T.reshape(config.hidden_size, config.num_key_value_heads, config.head_dim)
    np.testing.assert_array_equal(np.asarray(k16.astype(jnp.float32)), expected)
    np.testing.assert_array_equal(np.asarray(k32), expected)
    assert np.abs(expected).max() > 0


def test_config_round_trip_and_legacy_rope_keys():
    config = tiny_config("llama")
    assert ModelConfig.from_hf_dict(config.to_hf_dict()) == config
    legacy = {k: v for k, v in config.to_hf_dict().items() if k != "rope_parameters"}
    legacy["rope_scaling"] = {**config.rope_scaling_dict}
    legacy["rope_scaling"]["type"] = legacy["rope_scaling"].pop("rope_type")
    parsed = ModelConfig.from_hf_dict(legacy)
    assert parsed.rope_type == "llama3" and parsed.rope_theta == config.rope_theta
    assert hash(parsed) == hash(parsed.replace())  # static in jit: must be hashable
    qwen2 = ModelConfig.from_hf_dict({**tiny_config("qwen2").to_hf_dict(), "eos_token_id": [2, 5]})
    assert qwen2.attention_bias and not qwen2.attention_out_bias and qwen2.eos_token_id == (2, 5)


def _write(tmp_path, family="llama", **config_changes):
    path = make_tiny_checkpoint(tmp_path / "ckpt", family)
    if config_changes:
        d = json.loads((path / "config.json").read_text())
        d.update(config_changes)
        (path / "config.json").write_text(json.dumps(d))
    return path


def _rewrite_tensors(path, change):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(path / "model.safetensors")
    change(tensors)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})


def test_unsupported_model_type_lists_supported(tmp_path):
    path = _write(tmp_path, model_type="gpt2")
    with pytest.raises(
        ValueError,
        match=r"unsupported model_type 'gpt2'.*llama, qwen2, qwen3, mistral, gemma3_text",
    ):
        load_hf(path)


def test_missing_and_unexpected_tensors_are_listed(tmp_path):
    path = _write(tmp_path)

    def change(t):
        del t["model.layers.1.mlp.up_proj.weight"]
        t["model.layers.1.mlp.extra.weight"] = np.zeros(3, np.float32)

    _rewrite_tensors(path, change)
    with pytest.raises(ValueError) as err:
        load_hf(path)
    assert "missing tensors: model.layers.1.mlp.up_proj.weight" in str(err.value)
    assert "unexpected tensors: model.layers.1.mlp.extra.weight" in str(err.value)


def test_shape_mismatch_names_tensor_and_both_shapes(tmp_path):
    path = _write(tmp_path, intermediate_size=96)  # config says 96, tensors have 128
    with pytest.raises(
        ValueError,
        match=r"model.layers.0.mlp.gate_proj.weight has shape \(128, 64\), expected \(96, 64\)",
    ):
        load_hf(path)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_hf(tmp_path / "nowhere")
    path = _write(tmp_path)
    (path / "model.safetensors").unlink()
    with pytest.raises(
        FileNotFoundError, match="expected model.safetensors or model.safetensors.index.json"
    ):
        load_hf(path)
    (path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        load_hf(path)


def test_index_pointing_to_missing_shard(tmp_path):
    path = save_hf(random_model(tiny_config("qwen3")), None, tmp_path / "s", max_shard_bytes=50_000)
    victim = sorted(path.glob("model-*.safetensors"))[-1]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=victim.name):
        load_hf(path)


def test_bad_dtype_and_mismatched_config(tmp_path):
    path = _write(tmp_path)
    with pytest.raises(ValueError, match="dtype must be one of float32, bfloat16, float16"):
        load_hf(path, dtype="int8")
    model = random_model(tiny_config("llama"))
    with pytest.raises(ValueError, match="hidden_size"):
        save_hf(model, tiny_config("llama", hidden_size=32), tmp_path / "bad")
    with pytest.raises(TypeError, match="model must be an llm.models.transformer.Transformer"):
        save_hf(object(), None, tmp_path / "bad")


# Abridged config.json files of the released models the paper and users start from.
LLAMA_3_2_3B_INSTRUCT = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 24,
    "num_hidden_layers": 28,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 32.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "vocab_size": 128256,
}
QWEN2_5_0_5B_INSTRUCT = {
    "architectures": ["Qwen2ForCausalLM"],
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "hidden_act": "silu",
    "hidden_size": 896,
    "intermediate_size": 4864,
    "max_position_embeddings": 32768,
    "max_window_layers": 21,
    "model_type": "qwen2",
    "num_attention_heads": 14,
    "num_hidden_layers": 24,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "use_sliding_window": False,
    "vocab_size": 151936,
}
QWEN3_0_6B = {
    "architectures": ["Qwen3ForCausalLM"],
    "attention_bias": False,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "max_position_embeddings": 40960,
    "model_type": "qwen3",
    "num_attention_heads": 16,
    "num_hidden_layers": 28,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "vocab_size": 151936,
}


def test_released_model_configs_parse():
    llama = ModelConfig.from_hf_dict(LLAMA_3_2_3B_INSTRUCT)
    assert llama.rope_type == "llama3" and llama.rope_scaling_dict["factor"] == 32.0
    assert llama.eos_token_id == (128001, 128008, 128009) and llama.tie_word_embeddings
    assert llama.param_dtype == "bfloat16" and llama.num_groups == 3
    assert 3.1e9 < llama.num_params() < 3.3e9
    qwen = ModelConfig.from_hf_dict(QWEN2_5_0_5B_INSTRUCT)
    assert qwen.attention_bias and not qwen.attention_out_bias and qwen.head_dim == 64
    assert 4.8e8 < qwen.num_params() < 5.0e8
    qwen3 = ModelConfig.from_hf_dict(QWEN3_0_6B)
    assert qwen3.use_qk_norm and qwen3.head_dim == 128 and qwen3.rope_scaling is None
    assert 5.9e8 < qwen3.num_params() < 6.0e8
    # transformers reads what we write back, with the same architecture
    for d in (LLAMA_3_2_3B_INSTRUCT, QWEN2_5_0_5B_INSTRUCT, QWEN3_0_6B):
        ours = ModelConfig.from_hf_dict(d)
        fields = ours.to_hf_dict()
        model_type = fields.pop("model_type")
        fields.pop("architectures")
        hf = transformers.AutoConfig.for_model(model_type, **fields)
        assert ModelConfig.from_hf_dict(hf.to_dict()) == ours
    with pytest.raises(ValueError, match="sliding-window"):
        ModelConfig.from_hf_dict({**QWEN2_5_0_5B_INSTRUCT, "use_sliding_window": True})
    with pytest.raises(ValueError, match="unsupported rope_scaling type 'yarn'"):
        ModelConfig.from_hf_dict(
            {**QWEN3_0_6B, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}
        )


MISTRAL_7B_V0_1 = {
    "architectures": ["MistralForCausalLM"],
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "model_type": "mistral",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "sliding_window": 4096,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 32000,
}
MISTRAL_7B_INSTRUCT_V0_3 = {
    **MISTRAL_7B_V0_1,
    "rope_theta": 1000000.0,
    "sliding_window": None,
    "vocab_size": 32768,
}
GEMMA_3_1B_IT = {
    "architectures": ["Gemma3ForCausalLM"],
    "attention_bias": False,
    "attn_logit_softcapping": None,
    "bos_token_id": 2,
    "cache_implementation": "hybrid",
    "eos_token_id": [1, 106],
    "final_logit_softcapping": None,
    "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 1152,
    "initializer_range": 0.02,
    "intermediate_size": 6912,
    "max_position_embeddings": 32768,
    "model_type": "gemma3_text",
    "num_attention_heads": 4,
    "num_hidden_layers": 26,
    "num_key_value_heads": 1,
    "pad_token_id": 0,
    "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-06,
    "rope_local_base_freq": 10000,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": 512,
    "sliding_window_pattern": 6,
    "torch_dtype": "bfloat16",
    "vocab_size": 262144,
}
# Multimodal: the text model's fields beyond these come from Gemma3TextConfig's defaults.
GEMMA_3_4B_IT = {
    "architectures": ["Gemma3ForConditionalGeneration"],
    "eos_token_id": [1, 106],
    "model_type": "gemma3",
    "text_config": {
        "hidden_size": 2560,
        "intermediate_size": 10240,
        "model_type": "gemma3_text",
        "num_hidden_layers": 34,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "sliding_window": 1024,
    },
    "torch_dtype": "bfloat16",
    "vision_config": {"model_type": "siglip_vision_model"},
}


def test_released_windowed_configs_parse():
    v01, v03 = (ModelConfig.from_hf_dict(d) for d in (MISTRAL_7B_V0_1, MISTRAL_7B_INSTRUCT_V0_3))
    assert v01.sliding_window == 4096 and set(v01.all_layer_types) == {"sliding_attention"}
    assert v03.sliding_window is None and set(v03.all_layer_types) == {"full_attention"}
    assert 7.2e9 < v01.num_params() < 7.3e9
    gemma1b = ModelConfig.from_hf_dict(GEMMA_3_1B_IT)
    assert gemma1b.num_params() == 999_885_952 and gemma1b.eos_token_id == (1, 106)
    kinds = gemma1b.all_layer_types
    assert [i for i, k in enumerate(kinds) if k == "full_attention"] == [5, 11, 17, 23]
    assert (gemma1b.rope_theta, gemma1b.rope_local_theta, gemma1b.sliding_window) == (
        1e6,
        1e4,
        512,
    )
    assert gemma1b.attention_scale == 256**-0.5 and gemma1b.embed_scale == 1152**0.5
    gemma4b = ModelConfig.from_hf_dict(GEMMA_3_4B_IT)
    assert gemma4b.model_type == "gemma3_text" and gemma4b.vocab_size == 262208
    assert gemma4b.rope_type == "linear" and gemma4b.rope_scaling_dict["factor"] == 8.0
    assert gemma4b.eos_token_id == (1, 106) and gemma4b.param_dtype == "bfloat16"
    assert 3.8e9 < gemma4b.num_params() < 3.95e9
    # transformers parses the same architecture, and reads back what we write
    hf4b = transformers.Gemma3Config(
        **{k: v for k, v in GEMMA_3_4B_IT.items() if k != "model_type"}
    )
    assert ModelConfig.from_hf_dict(hf4b.text_config.to_dict()) == gemma4b.replace(
        eos_token_id=1, param_dtype="float32", compute_dtype="float32"
    )
    for ours in (v01, v03, gemma1b, gemma4b):
        fields = ours.to_hf_dict()
        model_type = fields.pop("model_type")
        fields.pop("architectures")
        hf = transformers.AutoConfig.for_model(model_type, **fields)
        assert ModelConfig.from_hf_dict(hf.to_dict()) == ours


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"final_logit_softcapping": 30.0}, "final_logit_softcapping=30.0 is not supported"),
        ({"attn_logit_softcapping": 50.0}, "attn_logit_softcapping=50.0 is not supported"),
        ({"use_bidirectional_attention": True}, "use_bidirectional_attention"),
        ({"hidden_activation": "gelu"}, "hidden_activation must be 'gelu_pytorch_tanh'"),
        ({"sliding_window": None}, "sliding_window is None"),
        ({"layer_types": ["full_attention"]}, "layer_types must list one of"),
        (
            {"rope_parameters": {"sliding_attention": {"rope_type": "linear", "factor": 2.0}}},
            "must be plain RoPE",
        ),
    ],
)
def test_unsupported_gemma3_settings_are_refused(changes, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig.from_hf_dict({**GEMMA_3_1B_IT, **changes})


def test_sliding_window_only_where_supported():
    with pytest.raises(ValueError, match="sliding_window is only supported for mistral"):
        tiny_config("llama", sliding_window=8)
    with pytest.raises(ValueError, match="sliding_window must be a positive int"):
        tiny_config("mistral", sliding_window=0)
    with pytest.raises(ValueError, match="query_pre_attn_scalar is only used by gemma3_text"):
        tiny_config("qwen3", query_pre_attn_scalar=64.0)
    with pytest.raises(ValueError, match="sliding-window.*not supported for qwen3"):
        ModelConfig.from_hf_dict({**QWEN3_0_6B, "use_sliding_window": True})


# ------------------------------------------------------------------- generation_config.json
# Qwen2.5-Instruct's generation_config.json (abridged): more stop ids than config.json's 151645.
QWEN2_5_INSTRUCT_GENERATION = {
    "bos_token_id": 151643,
    "do_sample": True,
    "eos_token_id": [151645, 151643],
    "pad_token_id": 151643,
    "temperature": 0.7,
    "top_p": 0.8,
}


def _write_generation_config(path, **fields):
    (path / "generation_config.json").write_text(json.dumps(fields))
    return path


def test_generation_config_eos_ids_are_merged(tmp_path):
    path = _write_generation_config(_write(tmp_path, "qwen2"), eos_token_id=[7, 2], top_p=0.8)
    model, config = load_hf(path)
    assert config.eos_token_id == (2, 7)  # config.json's first, then the new ones
    assert set(config.eos_token_id) == {2, 7}  # what the trainer does with them
    assert config.config_json_eos_token_id == (2,)
    assert model.config == config == tiny_config("qwen2", eos_token_id=(2, 7))
    assert ModelConfig.from_json(path, generation_config=False).eos_token_id == (2,)
    assert ModelConfig.from_json(path, eos_token_id=9).eos_token_id == (9,)  # override wins
    assert ModelConfig.from_json(path / "config.json").eos_token_id == (2, 7)
    for eos, expected in ((5, (2, 5)), (2, (2,)), ([2], (2,)), (None, (2,)), ([], (2,))):
        _write_generation_config(path, eos_token_id=eos)
        config = ModelConfig.from_json(path)
        assert config.eos_token_id == expected, eos
        assert config.config_json_eos_token_id == (None if expected == (2,) else (2,))
    (path / "generation_config.json").write_text(json.dumps({"do_sample": True}))
    assert ModelConfig.from_json(path).eos_token_id == (2,)


def test_released_generation_config_parses():
    qwen = ModelConfig.from_hf_dict(QWEN2_5_0_5B_INSTRUCT, QWEN2_5_INSTRUCT_GENERATION)
    assert qwen.eos_token_id == (151645, 151643) and qwen.config_json_eos_token_id == (151645,)
    assert qwen.to_hf_dict()["eos_token_id"] == 151645  # config.json as released
    assert qwen.to_hf_generation_dict() == {
        "bos_token_id": 151643,
        "eos_token_id": [151645, 151643],
    }
    # Llama 3.2 Instruct declares the same three ids in both files: nothing to add
    llama_generation = {"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]}
    llama = ModelConfig.from_hf_dict(LLAMA_3_2_3B_INSTRUCT, llama_generation)
    assert llama.eos_token_id == (128001, 128008, 128009)
    assert llama.config_json_eos_token_id is None and llama.to_hf_generation_dict() is None


def test_malformed_generation_config(tmp_path):
    path = _write(tmp_path, "qwen2")
    (path / "generation_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="generation_config.json is not valid JSON"):
        load_hf(path)
    for bad in ("2", [2, "7"], [True], [-1], {"a": 1}):
        _write_generation_config(path, eos_token_id=bad)
        with pytest.raises(ValueError, match="eos_token_id in generation_config.json"):
            load_hf(path)
    (path / "generation_config.json").write_text("[2, 7]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        load_hf(path)


def test_save_hf_writes_generation_config_for_extra_eos_ids(tmp_path):
    source = _write_generation_config(_write(tmp_path, "qwen2"), eos_token_id=[2, 7])
    model, config = load_hf(source)
    out = save_hf(model, config, tmp_path / "out")
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == 2
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation == {"bos_token_id": 1, "eos_token_id": [2, 7], "pad_token_id": 0}
    again, config_again = load_hf(out)
    assert config_again == config and config_again.eos_token_id == (2, 7)
    assert config_again.config_json_eos_token_id == (2,)
    for p, value in _state_arrays(model).items():
        np.testing.assert_array_equal(_state_arrays(again)[p], value)
    # transformers reads the same stop ids
    assert transformers.GenerationConfig.from_pretrained(out).eos_token_id == [2, 7]
    assert transformers.AutoConfig.from_pretrained(out).eos_token_id == 2
    # a second save into the same folder changes nothing
    save_hf(again, config_again, out)
    assert json.loads((out / "generation_config.json").read_text()) == generation


def test_save_hf_generation_config_only_when_needed(tmp_path):
    model = random_model(tiny_config("qwen2"))
    out = save_hf(model, None, tmp_path / "plain")
    assert not (out / "generation_config.json").exists()
    assert load_hf(out)[1].eos_token_id == (2,)
    # ids set by hand all go to config.json, as before
    listed = save_hf(model, model.config.replace(eos_token_id=(2, 7)), tmp_path / "listed")
    assert json.loads((listed / "config.json").read_text())["eos_token_id"] == [2, 7]
    assert not (listed / "generation_config.json").exists()
    assert load_hf(listed)[1].eos_token_id == (2, 7)
    # a loaded config whose stop ids were then replaced: config.json cannot keep its old id
    source = _write_generation_config(_write(tmp_path, "qwen2"), eos_token_id=[2, 7])
    _, loaded = load_hf(source)
    replaced = loaded.replace(eos_token_id=(5,))
    assert replaced.to_hf_dict()["eos_token_id"] == 5
    assert replaced.to_hf_generation_dict() is None
    more = loaded.replace(eos_token_id=(2, 7, 9))
    assert more.to_hf_dict()["eos_token_id"] == 2
    assert more.to_hf_generation_dict()["eos_token_id"] == [2, 7, 9]


def test_save_hf_rewrites_stale_generation_config(tmp_path):
    model = random_model(tiny_config("qwen2"))
    out = tmp_path / "out"
    out.mkdir()
    _write_generation_config(out, eos_token_id=[2, 7], temperature=0.7)  # from an older save
    save_hf(model, None, out)
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation == {"eos_token_id": 2, "temperature": 0.7}  # other settings kept
    assert load_hf(out)[1].eos_token_id == (2,)
