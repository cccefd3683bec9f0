"""MkDocs hook: render the docstrings' doctest blocks (``>>>`` lines) as code.

A run of lines starting with ``>>>`` (with its ``...`` continuations and output, up to the
next blank line) becomes a ```pycon fence, so mkdocstrings shows it as code instead of a
paragraph whose brackets Markdown would read as links. Lines inside fences are left alone.
"""

import re

from markdown import Extension
from markdown.preprocessors import Preprocessor
from mkdocs.plugins import event_priority

_FENCE = re.compile(r"^\s*(```|~~~)")
_PROMPT = re.compile(r"^(\s*)>>> ")


class _DoctestFence(Preprocessor):
    def run(self, lines: list[str]) -> list[str]:
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


class DoctestFenceExtension(Extension):
    def extendMarkdown(self, md):  # noqa: N802 (Python-Markdown's name)
        md.preprocessors.register(_DoctestFence(md), "doctest_fence", 30)


@event_priority(100)  # before mkdocstrings reads the extension list
def on_config(config):
    config.markdown_extensions.append(DoctestFenceExtension())
    return config
