"""The docs' "Build your own loop" example (docs/llm/loop.md) runs as written (in a temporary
folder)."""

import contextlib
import io
import pathlib
import re

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
LOOP_PAGE = REPO_ROOT / "docs" / "llm" / "loop.md"


def _example() -> str:
    text = LOOP_PAGE.read_text()
    match = re.search(r"<!-- test: build-your-own-loop -->\n```python\n(.*?)```", text, re.S)
    assert match, f"{LOOP_PAGE} lost its build-your-own-loop example"
    return match.group(1)


@pytest.mark.slow
def test_build_your_own_loop_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_example(), str(LOOP_PAGE), "exec"), {})
    lines = out.getvalue().strip().splitlines()
    assert [line.split()[0] for line in lines[:4]] == ["0", "1", "2", "3"]
    assert "eval_greedy_accuracy" in lines[-1] and "eval_pass@4" in lines[-1]
    assert (tmp_path / "runs" / "tiny-qwen2" / "config.json").exists()
