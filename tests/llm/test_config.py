"""TrainConfig: parsing of files and strings, and validate() naming the bad field
(ConfigError, a ValueError); one declaration per field (option(): help, group, range,
choices) read by the checks, the CLI and the docs' reference; make_mesh's device-count
checks."""

import dataclasses
import json
import math
import pathlib

import jax
import numpy as np
import pytest

from llm.errors import ConfigError
from llm.models.sharding import make_mesh
from llm.rl import config_fields
from llm.rl.config import GROUPS, HELP, TrainConfig
from llm.rl.config_fields import Range, option, option_of
from llm.rl.config_reference import reference_markdown
from llm.train import build_parser, resolve_config

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


def _invalid(cfg: TrainConfig) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    return info.value


def test_config_error_is_a_value_error_naming_the_field():
    err = ConfigError("delta_v", "must be a finite number, got nan")
    assert isinstance(err, ValueError)
    assert str(err) == "delta_v: must be a finite number, got nan"
    assert err.flag == "--delta-v" and err.field == "delta_v" and err.source is None
    sourced = err.with_source("run.yaml")
    assert str(sourced) == "run.yaml: delta_v: must be a finite number, got nan"
    assert sourced.source == "run.yaml" and sourced.field == "delta_v"
    assert ConfigError(None, "no such file", source="x.yaml").flag is None


def test_defaults_and_shipped_configs_validate(model_dir, tmp_path):
    assert TrainConfig(model_path=str(model_dir)).validate().model_path == str(model_dir)
    assert TrainConfig(model_path=model_dir).validate()  # a Path is fine too
    data = tmp_path / "data"
    data.mkdir()
    files = sorted((REPO / "configs").glob("*.yaml"))
    assert files
    for file in files:
        cfg = TrainConfig.from_file(file)
        paths = dict(model_path=str(model_dir))
        for name in ("data_path", "eval_data_path"):
            if getattr(cfg, name) is not None:
                paths[name] = str(data)
        cfg.replace(**paths).validate()


@pytest.mark.parametrize(
    "changes, field, message",
    [
        (dict(delta_v=math.nan), "delta_v", "must be a finite number, got nan"),
        (dict(delta_v=-math.inf), "delta_v", "must be a finite number, got -inf"),
        (dict(learning_rate=math.inf), "learning_rate", "must be a finite number >= 0, got inf"),
        (dict(learning_rate=-1.0), "learning_rate", "must be a finite number >= 0, got -1.0"),
        (dict(temperature=math.inf), "temperature", "must be a finite number > 0, got inf"),
        (dict(eval_temperature=math.nan), "eval_temperature", "finite number >= 0, got nan"),
        (dict(grpo_epsilon=math.inf, loss="grpo"), "grpo_epsilon", "finite number >= 0"),
        (dict(kl_beta=math.nan, loss="grpo"), "kl_beta", "must be a finite number >= 0"),
        (dict(kl_beta=0.1), "kl_beta", "must be 0 with loss=asymre (grpo only), got 0.1"),
        (dict(grpo_epsilon_high=math.nan, loss="grpo"), "grpo_epsilon_high", "got nan"),
        (dict(grpo_epsilon_high=0.3), "grpo_epsilon_high", "must be none with loss=asymre"),
        (dict(leave_one_out=True, loss="grpo"), "leave_one_out", "must be false with loss=grpo"),
        (dict(advantage_scale="group_std", loss="grpo"), "advantage_scale", "must be none"),
        (dict(advantage_scale="std"), "advantage_scale", "one of none, group_std, got 'std'"),
        (dict(is_truncation=0.0), "is_truncation", "must be > 0"),
        (dict(weight_decay=math.inf), "weight_decay", "finite number >= 0, got inf"),
        (dict(max_grad_norm=math.nan), "max_grad_norm", "finite number >= 0, got nan"),
        (dict(adam_b1=1.0), "adam_b1", "must be in [0, 1), got 1.0"),
        (dict(adam_eps=0.0), "adam_eps", "must be a finite number > 0, got 0.0"),
        (dict(top_p=0.0), "top_p", "must be in (0, 1], got 0.0"),
        (dict(eval_top_p=math.nan), "eval_top_p", "must be in (0, 1], got nan"),
        (dict(min_lr_ratio=-0.5), "min_lr_ratio", "must be in [0, 1]"),
        (dict(samples_per_prompt=1), "samples_per_prompt", "must be an integer >= 2"),
        (dict(micro_batches=3), "micro_batches", "must divide"),
        (dict(refresh_every=0), "refresh_every", "must be an integer >= 1, got 0"),
        (dict(seed=-1), "seed", "must be an integer >= 0, got -1"),
        (dict(eval_max_new_tokens=0), "eval_max_new_tokens", "must be an integer >= 1"),
        (
            dict(loss="ppo"),
            "loss",
            "must be one of asymre, grpo, is_reinforce, cispo, topr, got 'ppo'",
        ),
        (dict(task="gsm9k"), "task", "(did you mean 'gsm8k'?)"),
        (dict(dtype="fp32"), "dtype", "must be one of float32, bfloat16, float16"),
        (dict(compute_dtype="half"), "compute_dtype", "(or none), got 'half'"),
        (dict(reward="maths"), "reward", "(did you mean 'math'?)"),
        (dict(reward_scale="pm2"), "reward_scale", "must be one of pm1, 01"),
        (dict(normalization="tokens"), "normalization", "(did you mean 'token'?)"),
        (dict(lr_schedule="linear"), "lr_schedule", "must be one of constant, cosine"),
        (dict(is_level="seq"), "is_level", "must be one of sequence, token"),
        (dict(mesh="fsdp=x"), "mesh", "must look like 'fsdp=4,tp=2'"),
        (dict(mesh="dp=2"), "mesh", "unknown mesh axes"),
        (dict(mesh="fsdp=-1,tp=-1"), "mesh", "at most one -1"),
        (dict(task="gsm8k"), "data_path", "is required by task=gsm8k"),
        (dict(data_path="/no/such/data.jsonl"), "data_path", "must be an existing path"),
        # wrong types given from Python (strings are parsed only by replace / from_dict)
        (dict(num_steps="5"), "num_steps", "must be an integer, got '5'"),
        (dict(num_steps=2.5), "num_steps", "must be an integer, got 2.5"),
        (dict(num_steps=True), "num_steps", "must be an integer, got True"),
        (dict(delta_v="x"), "delta_v", "must be a number, got 'x'"),
        (dict(resume="yes"), "resume", "must be true or false, got 'yes'"),
        (dict(task_kwargs=[1]), "task_kwargs", "must be a mapping"),
        (dict(out_dir=3), "out_dir", "must be a string, got 3"),
        (dict(learning_rate=None), "learning_rate", "must be a number, got None"),
    ],
)
def test_validate_names_the_field(model_dir, changes, field, message):
    cfg = TrainConfig(model_path=str(model_dir))
    err = _invalid(TrainConfig(**(cfg.to_dict() | changes)))
    assert err.field == field
    assert str(err).startswith(f"{field}: ")
    assert message in err.message, err.message
    with pytest.raises(ValueError, match=field):  # plain ValueError callers
        TrainConfig(**(cfg.to_dict() | changes)).validate()


def test_model_path_must_be_a_model_folder(tmp_path):
    assert _invalid(TrainConfig()).field == "model_path"
    err = _invalid(TrainConfig(model_path=str(tmp_path / "missing")))
    assert (err.field, err.message) == (
        "model_path",
        f"must be an existing folder, got '{tmp_path / 'missing'}'",
    )
    err = _invalid(TrainConfig(model_path=str(tmp_path)))
    assert "with a config.json" in err.message


def test_allowed_edge_values(model_dir):
    base = TrainConfig(model_path=str(model_dir))
    base.replace(delta_v=5.0, learning_rate=0.0, eval_temperature=0.0).validate()
    base.replace(is_truncation=math.inf, loss="is_reinforce").validate()  # no truncation
    base.replace(loss="grpo", kl_beta=0.04, grpo_epsilon_high=0.28).validate()
    base.replace(leave_one_out=True, advantage_scale="group_std").validate()
    base.replace(mesh="fsdp=3,tp=2", mesh_subset=True).validate()  # the count: make_mesh


def test_strings_are_parsed_into_the_field_type():
    cfg = TrainConfig().replace(
        num_steps="7",
        delta_v=" -0.2 ",
        resume="yes",
        export_hf="off",
        mesh="none",
        eval_max_new_tokens="null",
        chat="None",
        task_kwargs='{"digits": 2}',
        learning_rate=1,  # an int for a float field
        seed=np.int64(3),
    )
    assert (cfg.num_steps, cfg.delta_v, cfg.resume, cfg.export_hf) == (7, -0.2, True, False)
    assert cfg.mesh is None and cfg.eval_max_new_tokens is None and cfg.chat is None
    assert cfg.task_kwargs == {"digits": 2}
    assert isinstance(cfg.learning_rate, float) and type(cfg.seed) is int
    assert TrainConfig().replace(delta_v="nan").delta_v != TrainConfig().delta_v  # validate's job
    assert TrainConfig().replace(model_path=pathlib.Path("m")).model_path == "m"


@pytest.mark.parametrize(
    "changes, field, message",
    [
        (dict(num_steps="abc"), "num_steps", "must be an integer, got 'abc'"),
        (dict(num_steps="1e3"), "num_steps", "must be an integer, got '1e3'"),
        (dict(delta_v="abc"), "delta_v", "must be a number, got 'abc'"),
        (dict(delta_v=None), "delta_v", "must be a number, got None"),
        (dict(resume="maybe"), "resume", "must be true or false, got 'maybe'"),
        (dict(task_kwargs="[1, 2]"), "task_kwargs", "must be a JSON object, got '[1, 2]'"),
        (dict(task_kwargs="{x"), "task_kwargs", "must be a JSON object ("),
        (dict(num_steps=1.5), "num_steps", "must be an integer, got 1.5"),
        (dict(tensorboard=1), "tensorboard", "must be true or false, got 1"),
    ],
)
def test_replace_refuses_bad_values(changes, field, message):
    with pytest.raises(ConfigError) as info:
        TrainConfig().replace(**changes)
    assert info.value.field == field and message in info.value.message


def test_unknown_fields_suggest_the_close_name():
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"learning_rat": 1e-5})
    assert info.value.field is None
    assert str(info.value) == "unknown field 'learning_rat' (did you mean 'learning_rate'?)"
    with pytest.raises(ConfigError, match="unknown field 'xyz'$"):
        TrainConfig().replace(xyz=1)


def test_from_file_errors_name_the_file(tmp_path):
    def load(name, text):
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            TrainConfig.from_file(path)
        assert info.value.source == str(path)
        return info.value

    err = load("a.yaml", "learning_rat: 1.0e-5\n")
    assert err.field is None and "did you mean 'learning_rate'" in err.message
    err = load("b.yaml", "num_steps: [1\n")
    assert err.message.startswith("invalid YAML: ")
    err = load("c.json", "{'num_steps': 1}")
    assert err.message.startswith("invalid JSON: ")
    err = load("d.yml", "just a string\n")
    assert err.message == "expected a mapping of TrainConfig fields, got str"
    err = load("e.json", json.dumps({"delta_v": "x"}))
    assert (err.field, err.message) == ("delta_v", "must be a number, got 'x'")
    assert str(err) == f"{tmp_path / 'e.json'}: delta_v: must be a number, got 'x'"
    with pytest.raises(ConfigError, match="no such file"):
        TrainConfig.from_file(tmp_path / "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert TrainConfig.from_file(empty) == TrainConfig()
    nulls = tmp_path / "nulls.yaml"
    nulls.write_text("task_kwargs:\nmesh: null\ndelta_v: .nan\n")
    cfg = TrainConfig.from_file(nulls)
    assert cfg.task_kwargs == {} and cfg.mesh is None and math.isnan(cfg.delta_v)


# ------------------------------------------------------------------ make_mesh


@pytest.mark.skipif(jax.device_count() != 8, reason="needs the 8 CPU devices of conftest")
def test_make_mesh_uses_every_device_unless_allowed():
    with pytest.raises(ConfigError) as info:
        make_mesh("fsdp=3,tp=2")
    assert info.value.field == "mesh" and "uses 6 of the 8 devices" in info.value.message
    with pytest.raises(ConfigError, match="uses 2 of the 8 devices"):
        make_mesh({"tp": 2})
    mesh = make_mesh("fsdp=3,tp=2", allow_subset=True)
    assert dict(mesh.shape) == {"fsdp": 3, "tp": 2} and mesh.devices.size == 6
    assert dict(make_mesh("fsdp=-1,tp=2").shape) == {"fsdp": 4, "tp": 2}
    assert dict(make_mesh("tp=8").shape) == {"fsdp": 1, "tp": 8}
    # explicit devices: "every device" means every one of those
    assert dict(make_mesh("fsdp=2", devices=jax.devices()[:2]).shape) == {"fsdp": 2, "tp": 1}


@pytest.mark.skipif(jax.device_count() != 8, reason="needs the 8 CPU devices of conftest")
@pytest.mark.parametrize(
    "spec, message",
    [
        ("fsdp=x", "mesh spec must look like 'fsdp=4,tp=2', got 'fsdp=x'"),
        ("dp=8", "unknown mesh axes ['dp']"),
        ("fsdp=0", "mesh sizes must be positive"),
        ("", "mesh spec is empty"),
        ("fsdp=8,tp=2", "mesh fsdp=8,tp=2 needs 16 devices, have 8"),
        ("fsdp=-1,tp=3", "8 devices are not divisible by tp=3 = 3"),
    ],
)
def test_make_mesh_errors_name_the_mesh(spec, message):
    with pytest.raises(ConfigError) as info:
        make_mesh(spec)
    assert info.value.field == "mesh" and message in info.value.message
    assert isinstance(info.value, ValueError)


# ------------------------------------------------------------------ one declaration per field


def _fields():
    return dataclasses.fields(TrainConfig)


def test_every_field_is_declared_once_with_help_and_group():
    """A field added without option() (no help, no group) fails here, not in the CLI."""
    for field in _fields():
        opt = option_of(field)  # TypeError for a bare dataclass field
        assert opt.help.strip() and opt.group in GROUPS, field.name
        assert HELP[field.name] == opt.help
    assert TrainConfig().task_kwargs is not TrainConfig().task_kwargs  # a fresh dict each
    with pytest.raises(ValueError, match="help must be a non-empty"):
        option(0, " ", group="run")

    @dataclasses.dataclass
    class HalfDeclared:
        plain: int = 0

    with pytest.raises(TypeError, match="'plain' is declared without option"):
        option_of(dataclasses.fields(HalfDeclared)[0])


def test_cli_has_a_flag_per_field_with_its_help():
    parser = build_parser()
    actions = {a.dest: a for a in parser._actions}
    for field in _fields():
        action = actions[field.name]
        assert action.option_strings == ["--" + field.name.replace("_", "-")]
        opt = option_of(field)
        assert action.help.startswith(opt.help)
        assert opt.allowed(field) in action.help
    # every flag reaches its field: the defaults written as flags give the default config
    argv = []
    for name, value in TrainConfig().to_dict().items():
        text = json.dumps(value) if isinstance(value, dict) else "none" if value is None else value
        argv += ["--" + name.replace("_", "-"), str(text)]
    assert resolve_config(parser.parse_args(argv)) == TrainConfig()
    changed = resolve_config(parser.parse_args(["--delta-v", "-0.3", "--lora-targets", "q,v"]))
    assert (changed.delta_v, changed.lora_targets) == (-0.3, "q,v")


def _outside(field):
    """A value outside the field's declared range: NaN for a float, below the bound else."""
    base, _ = config_fields.kind(field)
    return math.nan if base == "float" else int(option_of(field).range.low) - 1


@pytest.mark.parametrize(
    "name", [f.name for f in dataclasses.fields(TrainConfig) if option_of(f).range is not None]
)
def test_every_declared_range_is_checked(model_dir, name):
    field = next(f for f in _fields() if f.name == name)
    value = _outside(field)
    cfg = TrainConfig(model_path=str(model_dir)).replace(**{name: value})
    err = _invalid(cfg)
    assert (err.field, err.message) == (
        name,
        f"must be {option_of(field).allowed(field)}, got {config_fields.show(value)}",
    )


@pytest.mark.parametrize(
    "name", [f.name for f in dataclasses.fields(TrainConfig) if option_of(f).choices is not None]
)
def test_every_declared_choice_is_checked(model_dir, name):
    field = next(f for f in _fields() if f.name == name)
    err = _invalid(TrainConfig(model_path=str(model_dir)).replace(**{name: "zzz"}))
    assert (err.field, err.message) == (
        name,
        f"must be {option_of(field).allowed(field)}, got 'zzz'",
    )


@dataclasses.dataclass
class _Toy:
    ratio: float = option(0.5, "a ratio.", group="g", range=config_fields.UNIT_INTERVAL)
    count: int | None = option(None, "a count.", group="g", range=Range(low=3, note="all"))
    mode: str = option("fast", "a mode.", group="g", choices=("fast", "slow"))
    parts: str = option("a,b", "parts.", group="g", choices=("a", "b", "c"), separator=",")
    mapping: dict = option({}, "a mapping.", group="g")


@pytest.mark.parametrize(
    "changes, field, message",
    [
        (dict(ratio=1.5), "ratio", "must be in [0, 1], got 1.5"),
        (dict(ratio=math.inf), "ratio", "must be in [0, 1], got inf"),
        (dict(count=2), "count", "must be an integer >= 3 (or none: all), got 2"),
        (dict(mode="slw"), "mode", "must be one of fast, slow, got 'slw' (did you mean 'slow'?)"),
        (dict(parts="a,a"), "parts", "must be distinct names among a,b,c separated by commas"),
        (dict(parts="a,d"), "parts", "must be distinct names among a,b,c separated by commas"),
    ],
)
def test_range_and_choice_errors_come_from_the_declaration(changes, field, message):
    """check_options knows no field by name: the errors come from option()'s metadata."""
    config_fields.check_options(_Toy(count=None))  # None is the optional field's default
    with pytest.raises(ConfigError) as info:
        config_fields.check_options(_Toy(**changes))
    assert info.value.field == field and info.value.message.startswith(message)


def test_reference_doc_is_generated_from_the_fields():
    """docs/reference/config.md is `python -m llm.rl.config_reference`'s output: regenerate it
    after changing a field."""
    text = reference_markdown()
    assert (REPO / "docs" / "reference" / "config.md").read_text() == text
    for field in _fields():
        assert f"| `{field.name}`<br>`--{field.name.replace('_', '-')}`" in text
    for title in GROUPS.values():
        assert f"\n## {title}\n" in text
