"""No orphans: ``ratts models stop`` (from another process, as a user runs it) and the error
paths kill the server's whole process group, SIGTERM first, SIGKILL after a timeout.
Dummy long-running children stand in for vLLM (its command line is all stop looks at)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ratts.local.serve import ServerInfo, _kill_group, pid_file, process_alive

NAME = "smollm2-135m"
# a process whose command line says vLLM, with a grandchild in its group (like vLLM's
# engine and worker processes); it prints the grandchild's pid and waits
FAKE_VLLM = [
    sys.executable,
    "-c",
    "import subprocess, sys, time; "
    "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
    "print(g.pid, flush=True); time.sleep(300)",
    "vllm.entrypoints.openai.api_server",
]


def _spawn(cmd: list[str]) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def test_models_stop_from_another_process_kills_the_group(tmp_path: Path) -> None:
    proc, grandchild = _spawn(FAKE_VLLM)
    try:
        record = pid_file(NAME, tmp_path)
        record.parent.mkdir(parents=True)
        info = ServerInfo(NAME, proc.pid, "127.0.0.1", 8011, tmp_path / "l.log", tmp_path, 0.0)
        record.write_text(json.dumps(info.to_json()), encoding="utf-8")
        env = {**os.environ, "RATTS_DATA_DIR": str(tmp_path)}
        env["RATTS_CONFIG"] = str(tmp_path / "ratts.toml")
        stopped = subprocess.run(
            [sys.executable, "-m", "ratts.cli", "models", "stop"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert stopped.returncode == 0, stopped.stderr
        assert f"{NAME}: stopped (pid {proc.pid}" in stopped.stdout
        proc.wait(timeout=10)  # we are its parent: reap it
        deadline = time.monotonic() + 10
        while process_alive(grandchild) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not process_alive(grandchild), "the worker was orphaned"
        assert not record.exists()
    finally:
        _kill_group(proc.pid, grace_s=1.0)


def test_a_group_that_ignores_sigterm_is_killed_after_the_timeout() -> None:
    stubborn = [
        "bash",
        "-c",
        "trap '' TERM; (trap '' TERM; exec sleep 300) & echo $!; while :; do sleep 1; done",
    ]
    proc, grandchild = _spawn(stubborn)
    started = time.monotonic()
    _kill_group(proc.pid, grace_s=1.5)
    elapsed = time.monotonic() - started
    proc.wait(timeout=5)
    assert proc.returncode == -9  # SIGKILL, after SIGTERM was ignored
    assert not process_alive(grandchild) and not process_alive(proc.pid)
    assert 1.5 <= elapsed < 10
