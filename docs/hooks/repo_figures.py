"""MkDocs hook: serve files committed elsewhere in the repository as part of the site.

``bandits/figures/*.png`` -> ``figures/bandits/``, ``results/**`` (PNG figures, and each
README.md as that folder's page) -> ``results/``, and ``benchmarks/RESULTS.md`` ->
``benchmarks/results.md``: the pages show the files the experiments wrote, without a second
copy to keep in sync.
"""

import pathlib

from mkdocs.structure.files import File

_FOLDERS = {
    "bandits/figures": "figures/bandits",
    "benchmarks/figures": "figures/benchmarks",
    "results": "results",
}
_PAGES = {"benchmarks/RESULTS.md": "benchmarks/results.md"}


def _add(files, config, source: pathlib.Path, uri: str) -> None:
    files.append(File.generated(config, uri, abs_src_path=str(source)))


def on_files(files, config):
    repo = pathlib.Path(config.config_file_path).parent
    for folder, target in _FOLDERS.items():
        for path in sorted((repo / folder).rglob("*")):
            relative = path.relative_to(repo / folder)
            if path.suffix == ".png":
                _add(files, config, path, f"{target}/{relative.as_posix()}")
            elif path.name == "README.md":
                _add(files, config, path, f"{target}/{relative.parent.as_posix()}/index.md")
    for source, uri in _PAGES.items():
        _add(files, config, repo / source, uri)
    return files
