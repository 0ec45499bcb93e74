"""``ratts models serve-prm`` without starting vLLM: its flags, settings entry and bad input.

The served path itself is tests/test_prm_vllm.py (marked real).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ratts.endpoints.prm_formats import FORMATS
from ratts.local import UnknownModelError
from ratts.local.serve import pid_file, running_servers, stop_server
from ratts.local.serve_prm import count_parameters, pooler_args, prm_command
from ratts.local.settings_file import upsert_prm
from ratts.local.tiny_prm import build_tiny_prm
from ratts.settings import PRMSpec, load_settings


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("serve-prm")
    return {fmt: build_tiny_prm(base / fmt, fmt) for fmt in FORMATS}  # type: ignore[arg-type]


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_qwen_flags_use_the_folders_own_step_tag(folders: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    folder = folders["qwen2.5-math-prm"]
    args = pooler_args(folder, FORMATS["qwen2.5-math-prm"])
    tag = AutoTokenizer.from_pretrained(str(folder)).convert_tokens_to_ids("<extra_0>")
    assert _flag(args, "--runner") == "pooling"
    assert "--convert" not in args  # vLLM has a class of its own for Qwen2ForProcessRewardModel
    pooler = json.loads(_flag(args, "--pooler-config"))
    assert pooler == {"task": "token_classify", "pooling_type": "STEP", "step_tag_id": tag}
    assert tag != 151651  # not vLLM's default: that id only holds for Qwen's tokenizer


def test_shepherd_flags_make_the_lm_head_rows_bad_then_good(folders: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    folder = folders["math-shepherd"]
    args = pooler_args(folder, FORMATS["math-shepherd"])
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    assert _flag(args, "--runner") == "pooling" and _flag(args, "--convert") == "classify"
    overrides = json.loads(_flag(args, "--hf-overrides"))
    assert overrides == {"classifier_from_token": ["-", "+"], "method": "no_post_processing"}
    pooler = json.loads(_flag(args, "--pooler-config"))
    assert pooler["step_tag_id"] == tokenizer.convert_tokens_to_ids("ки")
    command = prm_command(folder, "tiny", FORMATS["math-shepherd"], "127.0.0.1", 9, "float32", 512)
    assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert _flag(command, "--served-model-name") == "tiny"
    assert _flag(command, "--max-model-len") == "512" and _flag(command, "--dtype") == "float32"


def test_parameters_are_counted_from_the_safetensors_headers(folders: dict[str, Path]) -> None:
    import torch

    from ratts.endpoints.prm_transformers import Qwen2ForProcessRewardModel

    folder = folders["qwen2.5-math-prm"]
    model = Qwen2ForProcessRewardModel.from_pretrained(str(folder), dtype=torch.float32)
    assert count_parameters(folder) == sum(p.numel() for p in model.parameters())


def test_upsert_prm_makes_it_the_default_and_keeps_the_builtin(tmp_path: Path) -> None:
    config = tmp_path / "ratts.toml"
    config.write_text('db_url = "sqlite:///x.db"\n', encoding="utf-8")
    spec = PRMSpec(
        name="tiny",
        kind="vllm_pooling",
        base_url="http://127.0.0.1:8201/v1",
        model="tiny",
        format="math-shepherd",
        params=12345.0,
        max_context=512,
    )
    upsert_prm(spec, config)
    upsert_prm(spec.model_copy(update={"params": 99.0}), config)  # replaced, not added
    settings = load_settings(config)
    assert [p.name for p in settings.prms] == ["tiny", "arith"]
    assert settings.prm() == spec.model_copy(update={"params": 99.0})
    assert settings.db_url == "sqlite:///x.db"


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ratts.cli", "models", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_serve_prm_bad_folders_are_one_line_errors(tmp_path: Path) -> None:
    env = {"RATTS_DATA_DIR": str(tmp_path), "RATTS_CONFIG": str(tmp_path / "ratts.toml")}
    missing = _cli("serve-prm", str(tmp_path / "nowhere"), env=env)
    assert missing.returncode == 2
    assert "is not a model folder (no config.json)" in missing.stderr
    assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    plain = build_tiny_prm(tmp_path / "plain-lm", "math-shepherd", step_tag=False)
    not_prm = _cli("serve-prm", str(plain), env=env)
    assert not_prm.returncode == 2 and "Traceback" not in not_prm.stderr
    assert "splits the step tag 'ки'; this is not a math-shepherd PRM" in not_prm.stderr
    assert not (tmp_path / "ratts.toml").exists()  # nothing was written
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").iterdir())


def test_stop_knows_prm_records_and_refuses_unknown_names(tmp_path: Path) -> None:
    record = pid_file("tiny-prm", tmp_path)
    record.parent.mkdir(parents=True)
    dead = {
        "name": "tiny-prm",
        "pid": 2**22 + 7,
        "host": "127.0.0.1",
        "port": 9,
        "log": str(tmp_path / "x.log"),
        "model_dir": str(tmp_path),
        "started_at": 0.0,
    }
    record.write_text(json.dumps(dead), encoding="utf-8")
    assert running_servers(tmp_path) == []  # a dead PRM server's record is stale
    assert not record.exists()
    assert stop_server("smollm2-135m", base=tmp_path) is None  # a known model, not running
    with pytest.raises(UnknownModelError, match=r"^no server named 'tiny-prm' is running"):
        stop_server("tiny-prm", base=tmp_path)
