"""The model CLIs turn a failure into one ``error:`` line naming the argument to blame.

``OneLineParser.call_or_error`` is shared by ``python -m llm.models.fetch`` and
``python -m llm.models.gguf``; the first matching kind in ``blame`` wins, so a
``FileNotFoundError`` (an ``OSError``) can blame the input before ``OSError`` blames ``--out``.
"""

from __future__ import annotations

import pytest

from llm.models import fetch
from llm.models.gguf import OneLineParser


def _raise(err):
    def action(*_):
        raise err

    return action


@pytest.mark.parametrize(
    "err, blamed",
    [
        (RuntimeError("pip failed"), "NAME"),
        (ValueError("sha256 differs"), "NAME"),
        (PermissionError("read-only"), "--out"),
    ],
)
def test_fetch_main_blames_the_argument(err, blamed, monkeypatch, capsys):
    monkeypatch.setattr(fetch, "fetch_model", _raise(err))
    name = sorted(fetch.MODELS)[0]
    with pytest.raises(SystemExit) as exit_info:
        fetch.main([name])
    assert exit_info.value.code == 2
    line = capsys.readouterr().err
    assert line == f"python -m llm.models.fetch: error: {blamed}: {err}\n"


def test_first_matching_kind_wins_and_others_propagate(capsys):
    parser = OneLineParser(prog="p")
    blame = [(FileNotFoundError, "FILE"), (OSError, "--out")]
    assert parser.call_or_error(lambda a, b: a + b, 1, 2, blame=blame) == 3
    with pytest.raises(SystemExit):
        parser.call_or_error(_raise(FileNotFoundError("gone")), blame=blame)
    assert capsys.readouterr().err == "p: error: FILE: gone\n"
    with pytest.raises(SystemExit):
        parser.call_or_error(_raise(IsADirectoryError("dir")), blame=blame[1:])
    assert capsys.readouterr().err == "p: error: --out: dir\n"
    with pytest.raises(KeyError):
        parser.call_or_error(_raise(KeyError("other")), blame=blame)
    assert capsys.readouterr().err == ""
