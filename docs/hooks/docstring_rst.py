"""MkDocs hook: render the docstrings' reStructuredText bits that Markdown would garble.

- A run of lines starting with ``>>>`` (with its ``...`` continuations and output, up to the
  next blank line) becomes a ```pycon fence, so mkdocstrings shows it as code instead of a
  paragraph whose brackets Markdown would read as links.
- ``.. math::  X`` (and its more-indented continuation lines) becomes display math ``\\[X\\]``
  and the role :math:`X` inline math ``\\(X\\)``, which pymdownx.arithmatex hands to MathJax.
Lines inside fences are left alone.
"""

import re

from markdown import Extension
from markdown.preprocessors import Preprocessor
from mkdocs.plugins import event_priority

_FENCE = re.compile(r"^\s*(```|~~~)")
_PROMPT = re.compile(r"^(\s*)>>> ")
_MATH_BLOCK = re.compile(r"^(\s*)\.\. math::\s*(.*)$")
_MATH_ROLE = re.compile(r":math:`([^`]*)`")


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip())


def _math_blocks(lines: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(lines):
        match = _MATH_BLOCK.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent, body = match.group(1), [match.group(2)]
        i += 1
        while i < len(lines) and lines[i].strip() and _indent_of(lines[i]) > len(indent):
            body.append(lines[i].strip())
            i += 1
        out += ["", indent + "\\[", *(indent + b for b in body if b), indent + "\\]", ""]
    return out


def _doctest_fences(lines: list[str]) -> list[str]:
    out: list[str] = []
    in_fence = in_doctest = False
    indent = ""
    for line in lines:
        if in_doctest and not line.strip():
            out += [indent + "```", line]
            in_doctest = False
            continue
        if not in_doctest and _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and not in_doctest and (match := _PROMPT.match(line)):
            indent = match.group(1)
            out += ["", indent + "```pycon"]
            in_doctest = True
        out.append(line)
    if in_doctest:
        out.append(indent + "```")
    return out


class _DocstringRst(Preprocessor):
    def run(self, lines: list[str]) -> list[str]:
        text = _MATH_ROLE.sub(lambda m: "\\(" + m.group(1) + "\\)", "\n".join(lines))
        return _doctest_fences(_math_blocks(text.split("\n")))


class DocstringRstExtension(Extension):
    def extendMarkdown(self, md):  # noqa: N802 (Python-Markdown's name)
        md.preprocessors.register(_DocstringRst(md), "docstring_rst", 30)


@event_priority(100)  # before mkdocstrings reads the extension list
def on_config(config):
    config.markdown_extensions.append(DocstringRstExtension())
    return config
