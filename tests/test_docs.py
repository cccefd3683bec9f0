"""The docs run as written: every ```python block of docs/**/*.md and README.md executes.

A fenced block is one of
- ```python: executed (the blocks of one page in order, in one namespace, in a temporary
  folder), unless the line before the fence is `<!-- no-test -->` (a sketch with `...` or a
  path to real weights) or `<!-- test: NAME -->` (run by a dedicated test that names it);
- a fence for something that is not Python to run (bash, text, yaml, ...): the `python -m
  MODULE` commands of the bash blocks must name a project module that imports and whose
  `--help` works, and the scripts and config files they name must exist.
An unlabelled fence, an unknown language or an unknown marker fails, so a block cannot be
skipped by accident. `mkdocs build --strict` runs when mkdocs is installed.
"""

import contextlib
import dataclasses
import importlib.util
import io
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
DOC_FILES = sorted((REPO / "docs").rglob("*.md")) + [REPO / "README.md"]
RUN_LANGUAGES = {"python"}
OTHER_LANGUAGES = {"bash", "text", "yaml", "json", "toml", "pycon", "console"}
NO_TEST = "<!-- no-test -->"
NAMED_TEST = re.compile(r"<!-- test: ([\w-]+) -->")
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
PROJECT_PACKAGES = ("asymre_jax", "bandits", "llm")
RUN_WITHOUT_FLAGS = {"asymre_jax.demo"}  # takes no flags: run it whole (about 10 s)


@dataclasses.dataclass(frozen=True)
class Block:
    path: pathlib.Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    marker: str  # the line before the fence, stripped

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def fenced_blocks(path: pathlib.Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with the line before each fence."""
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, language = match.groups()
        end = next(
            (j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"),
            None,
        )
        assert end is not None, f"{path}:{i + 1}: unclosed fence"
        body = [line.removeprefix(indent) for line in lines[i + 1 : end]]
        marker = lines[i - 1].strip() if i > 0 else ""
        blocks.append(Block(path, i + 1, language, "\n".join(body) + "\n", marker))
        i = end + 1
    return blocks


ALL_BLOCKS = [block for path in DOC_FILES for block in fenced_blocks(path)]


def _runs_here(block: Block) -> bool:
    return (
        block.language in RUN_LANGUAGES
        and block.marker != NO_TEST
        and not NAMED_TEST.fullmatch(block.marker)
    )


def test_the_docs_have_runnable_blocks():
    assert sum(_runs_here(block) for block in ALL_BLOCKS) >= 5


def test_every_fence_says_what_it_is():
    unlabelled = [
        f"{block.where}: ```{block.language}"
        for block in ALL_BLOCKS
        if block.language not in RUN_LANGUAGES | OTHER_LANGUAGES
    ]
    assert not unlabelled, (
        "fences need a language: ```python (run by this test) or one of "
        f"{sorted(OTHER_LANGUAGES)}: {unlabelled}"
    )
    bad_markers = [
        f"{block.where}: {block.marker}"
        for block in ALL_BLOCKS
        if block.marker.startswith("<!--")
        and block.marker != NO_TEST
        and not NAMED_TEST.fullmatch(block.marker)
    ]
    assert not bad_markers, f"unknown markers before fences: {bad_markers}"


def test_named_blocks_have_their_test():
    tests = [p for p in (REPO / "tests").rglob("test_*.py") if p.name != "test_docs.py"]
    sources = "".join(p.read_text() for p in tests)
    for block in ALL_BLOCKS:
        if match := NAMED_TEST.fullmatch(block.marker):
            assert f"test: {match.group(1)}" in sources, f"{block.where}: no test reads it"


def _pages_with_runnable_blocks() -> list:
    """One param per page; the LLM pages (they build models and compile them) are slow."""
    pages = sorted({block.path for block in ALL_BLOCKS if _runs_here(block)})
    return [
        pytest.param(
            page,
            id=str(page.relative_to(REPO)),
            marks=[pytest.mark.slow] if page.parent.name == "llm" else [],
        )
        for page in pages
    ]


@pytest.mark.parametrize("page", _pages_with_runnable_blocks())
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    for block in (b for b in fenced_blocks(page) if _runs_here(b)):
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                exec(compile(block.code, block.where, "exec"), namespace)
            except Exception as error:
                raise AssertionError(f"{block.where}: the block raised {error!r}") from error


def _shell_commands() -> list[tuple[Block, str]]:
    commands = []
    for block in ALL_BLOCKS:
        if block.language != "bash":
            continue
        for line in block.code.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|;|\|", line.split("#", 1)[0]):
                if part.strip():
                    commands.append((block, part.strip()))
    return commands


def _project_modules() -> set[str]:
    modules = set()
    for _, command in _shell_commands():
        match = re.search(r"\bpython3? -m ([\w.]+)", command)
        if match and match.group(1).split(".")[0] in PROJECT_PACKAGES:
            modules.add(match.group(1))
    return modules


def test_shell_blocks_name_what_exists():
    missing = []
    for block, command in _shell_commands():
        if match := re.search(r"\bpython3? -m ([\w.]+)", command):
            if importlib.util.find_spec(match.group(1)) is None:
                missing.append(f"{block.where}: module {match.group(1)}")
        for file in re.findall(r"\b((?:benchmarks|configs)/[\w.\-]+\.(?:py|sh|yaml))", command):
            if not (REPO / file).exists():
                missing.append(f"{block.where}: file {file}")
    assert not missing, missing
    assert {"bandits.sweep", "llm.train"} <= _project_modules()


def _subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    return env


@pytest.mark.slow
@pytest.mark.parametrize("module", sorted(_project_modules()))
def test_shell_modules_help(module, tmp_path):
    flags = [] if module in RUN_WITHOUT_FLAGS else ["--help"]
    result = subprocess.run(
        [sys.executable, "-m", module, *flags],
        cwd=tmp_path,
        env=_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip()


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml")]
        + ["-d", str(tmp_path / "site")],
        cwd=REPO,
        env=_subprocess_env() | {"NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "llm_rl" / "index.html").exists()
