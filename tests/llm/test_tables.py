"""Datasets on disk in every format `llm.data.tables` reads (jsonl, parquet file or folder,
`save_to_disk` of a Dataset or DatasetDict), the field options, and a parquet-driven run."""

import json

import pytest

datasets = pytest.importorskip("datasets")

from llm.data.datasets import load_dataset, load_gsm8k, load_table  # noqa: E402
from llm.data.tables import data_format, read_rows  # noqa: E402
from llm.models.tiny import make_tiny_checkpoint  # noqa: E402
from llm.rl.config import ConfigError, TrainConfig  # noqa: E402
from llm.rl.metrics import read_metrics  # noqa: E402
from llm.train import main  # noqa: E402

TRAIN = [{"q": f"{i}+1=", "a": str(i + 1), "level": i % 3} for i in range(12)]
TEST = [{"q": f"{i}+2=", "a": str(i + 2), "level": 0} for i in range(4)]


def _parquet(path, rows):
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    return path


@pytest.fixture
def parquet_folder(tmp_path):
    folder = tmp_path / "pq" / "data"
    folder.mkdir(parents=True)
    _parquet(folder / "train-00000-of-00002.parquet", TRAIN[:6])
    _parquet(folder / "train-00001-of-00002.parquet", TRAIN[6:])
    _parquet(folder / "test-00000-of-00001.parquet", TEST)
    return tmp_path / "pq"


def test_every_format_gives_the_same_rows_in_order(tmp_path, parquet_folder):
    (tmp_path / "js").mkdir()
    jsonl = tmp_path / "js" / "train.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in TRAIN))
    saved = tmp_path / "saved"
    datasets.Dataset.from_list(TRAIN).save_to_disk(str(saved))
    saved_dict = tmp_path / "saved_dict"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(TRAIN), "test": datasets.Dataset.from_list(TEST)}
    ).save_to_disk(str(saved_dict))
    single = _parquet(tmp_path / "all.parquet", TRAIN)
    cases = {
        jsonl: "jsonl",
        tmp_path / "js": "jsonl-folder",
        saved: "saved",
        saved_dict: "saved",
        single: "parquet",
        parquet_folder: "parquet",
    }
    for path, kind in cases.items():
        assert data_format(path) == kind, path
        assert read_rows(path, "train") == TRAIN, path
    assert read_rows(parquet_folder, "test") == TEST
    assert read_rows(saved_dict, "test") == TEST


def test_split_errors_name_what_is_there(tmp_path, parquet_folder):
    with pytest.raises(FileNotFoundError, match="none of split 'validation'"):
        read_rows(parquet_folder, "validation")
    saved_dict = tmp_path / "saved_dict"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(TRAIN)}).save_to_disk(str(saved_dict))
    with pytest.raises(KeyError, match="splits \\['train'\\], not 'test'"):
        read_rows(saved_dict, "test")
    with pytest.raises(FileNotFoundError, match="not found"):
        read_rows(tmp_path / "missing", "train")
    # a folder of parquet files that name no split is one table, whatever the split asked
    plain = tmp_path / "plain"
    plain.mkdir()
    _parquet(plain / "part-a.parquet", TRAIN)
    assert read_rows(plain, "test") == TRAIN


def test_fields_columns_and_task_readers(tmp_path, parquet_folder):
    examples = load_table(parquet_folder, split="train", prompt_field="q", answer_field="a")
    assert [e.prompt for e in examples] == [r["q"] for r in TRAIN]
    assert examples[3].answer == "4" and examples[3].columns == {"level": 0}
    assert load_dataset("table", parquet_folder, split="test", prompt_field="q", answer_field="a")
    with pytest.raises(ValueError, match="no field 'prompt'"):
        load_table(parquet_folder, split="train")
    gsm = [{"question": "Q?", "answer": "so 1,234 #### 1,234"}]
    _parquet(tmp_path / "gsm.parquet", gsm)
    assert load_gsm8k(tmp_path / "gsm.parquet").pop().answer == "1234"


@pytest.mark.parametrize(
    "overrides, field, message",
    [
        (dict(prompt_field="q"), "prompt_field", "means nothing for task=arithmetic"),
        (dict(task="table", prompt_field=""), "prompt_field", "must be a column name"),
        (
            dict(task="table", prompt_field="q", answer_field="q"),
            "answer_field",
            "must differ from prompt_field",
        ),
        (
            dict(task="table", prompt_field="q", task_kwargs={"prompt_field": "q"}),
            "prompt_field",
            "also set in task_kwargs",
        ),
    ],
)
def test_field_options_are_checked(overrides, field, message, tmp_path):
    cfg = TrainConfig(model_path=str(tmp_path), data_path=str(tmp_path), **overrides)
    with pytest.raises(ConfigError, match=message) as err:
        cfg.validate()
    assert err.value.field == field


@pytest.mark.slow
def test_a_parquet_dataset_drives_a_run(tmp_path, parquet_folder):
    model = make_tiny_checkpoint(tmp_path / "llama", "llama")
    out = tmp_path / "run"
    argv = [
        "--model-path", str(model), "--task", "table", "--data-path", str(parquet_folder),
        "--prompt-field", "q", "--answer-field", "a", "--reward", "arithmetic",
        "--num-steps", "2", "--prompts-per-step", "2", "--samples-per-prompt", "4",
        "--max-new-tokens", "4", "--eval-every", "2", "--eval-prompts", "4",
        "--out-dir", str(out), "--progress", "false",
    ]  # fmt: skip
    assert main(argv) == 0
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [0, 1] and "eval_accuracy" in rows[1]
