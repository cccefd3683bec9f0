"""The model configs shipped with the planner: the public config.json of each checkpoint
(architecture numbers only, no weights), so a run can be planned before anything is
downloaded.

>>> sorted(SHIPPED_CONFIGS)
['llama-3.1-8b', 'qwen2.5-0.5b', 'qwen2.5-1.5b', 'qwen2.5-7b']
>>> model_config_path("qwen2.5-7b").name
'qwen2.5-7b.json'
"""

from __future__ import annotations

import pathlib

CONFIG_DIR = pathlib.Path(__file__).parent / "model_configs"
SHIPPED_CONFIGS = {
    "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B",
    "qwen2.5-1.5b": "Qwen/Qwen2.5-1.5B",
    "qwen2.5-7b": "Qwen/Qwen2.5-7B",
    "llama-3.1-8b": "meta-llama/Llama-3.1-8B",
}  # name -> the Hugging Face repository whose config.json it is


def model_config_path(name_or_path: str) -> pathlib.Path:
    """The config.json of a shipped name (`SHIPPED_CONFIGS`), else ``name_or_path`` itself
    (a config.json or a folder holding one); FileNotFoundError when there is none."""
    if name_or_path.lower() in SHIPPED_CONFIGS:
        return CONFIG_DIR / f"{name_or_path.lower()}.json"
    path = pathlib.Path(name_or_path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        shipped = ", ".join(sorted(SHIPPED_CONFIGS))
        raise FileNotFoundError(f"no config.json at {name_or_path!r} (shipped names: {shipped})")
    return path
