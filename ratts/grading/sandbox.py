"""Run math-verify in killable child processes, so one comparison can never hang its caller.

Why processes and not threads: math-verify's own timeout uses ``signal.alarm``, which works
only in the main thread. A worker thread with a join timeout does not help either: sympy can
spend minutes inside a single C call (``9^{9^{9^{9^{9}}}}`` is an integer power) that holds
the GIL, so the waiting thread never even gets to notice its timeout. A child process can
always be killed. Each child (``_mv_worker.py``, run as a plain script so it imports nothing
from ratts) serves one comparison at a time over a pipe; the pool keeps a few of them warm,
hands each to one caller at a time, and kills and forgets any child that runs past its limit.
The cost is one pipe round trip per comparison and about a second to start a child.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

WORKER_SCRIPT = Path(__file__).with_name("_mv_worker.py")
STARTUP_TIMEOUT_S = 30.0
# The child kills itself this long after the caller's limit, in case the caller is gone.
CHILD_GRACE_S = 5.0


class _Worker:
    """One child process and the unread bytes of its stdout."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-P", str(WORKER_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal is the parent's to handle
        )
        self._buf = b""
        self.ready = False

    def read_line(self, deadline: float) -> bytes | None:
        """The next line from the child, or None on timeout or end of file."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def wait_ready(self, timeout_s: float) -> bool:
        line = self.read_line(time.monotonic() + timeout_s)
        self.ready = line is not None and json.loads(line).get("ready") is True
        return self.ready

    def ask(self, gold: str, pred: str, timeout_s: float) -> bool | None:
        """math-verify's verdict, or None when the child timed out or died."""
        assert self.proc.stdin is not None
        job = {"gold": gold, "pred": pred, "limit": timeout_s + CHILD_GRACE_S}
        self.proc.stdin.write(json.dumps(job).encode() + b"\n")
        self.proc.stdin.flush()
        line = self.read_line(time.monotonic() + timeout_s)
        if line is None:
            return None
        return bool(json.loads(line).get("ok"))

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass

    def close(self) -> None:
        """Ask an idle child to exit by closing its stdin; kill it if it lingers."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=1)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


class Sandbox:
    """A small pool of math-verify child processes, safe to use from any thread."""

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = max_workers or max(2, min(4, os.cpu_count() or 2))
        self._idle: list[_Worker] = []
        self._count = 0
        self._cond = threading.Condition()
        self._warned = False

    def verify(self, gold: str, pred: str, timeout_s: float) -> bool | None:
        """math-verify(gold, pred) within ``timeout_s`` of compute; None if not decided.

        Waiting for a free child and starting one (first use, or after a kill) come on top
        of ``timeout_s`` but are bounded too.
        """
        worker = self._acquire(time.monotonic() + timeout_s + STARTUP_TIMEOUT_S)
        if worker is None:
            return None
        verdict: bool | None = None
        healthy = False
        try:
            if worker.ready or worker.wait_ready(STARTUP_TIMEOUT_S):
                verdict = worker.ask(gold, pred, timeout_s)
                healthy = verdict is not None
            elif not self._warned:
                self._warned = True
                log.warning("math-verify worker did not start; using the numeric fallback only")
        except (OSError, ValueError):
            healthy = False
        finally:
            self._release(worker, healthy)
        return verdict

    def warm_up(self, workers: int = 1) -> int:
        """Have up to ``workers`` children started and ready now; returns how many are.

        Use it before timing-sensitive work: a child takes about a second to start.
        """
        held: list[_Worker] = []
        for _ in range(min(workers, self.max_workers)):
            worker = self._acquire(time.monotonic())
            if worker is None:
                break
            held.append(worker)
        ready = 0
        for worker in held:
            ok = False
            try:
                ok = worker.ready or worker.wait_ready(STARTUP_TIMEOUT_S)
            except (OSError, ValueError):
                ok = False
            finally:
                self._release(worker, ok)
            ready += ok
        return ready

    def _acquire(self, deadline: float) -> _Worker | None:
        with self._cond:
            while not self._idle and self._count >= self.max_workers:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if self._idle:
                return self._idle.pop()
            self._count += 1
        try:
            return _Worker()
        except OSError:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            return None

    def _release(self, worker: _Worker, healthy: bool) -> None:
        replacement: _Worker | None = worker
        if not healthy:
            worker.kill()
            try:  # start the replacement now, so the next caller does not wait for it
                replacement = _Worker()
            except OSError:
                replacement = None
        with self._cond:
            if replacement is not None:
                self._idle.append(replacement)
            else:
                self._count -= 1
            self._cond.notify()

    def close(self) -> None:
        """Stop the idle children (busy ones are stopped when they are released)."""
        with self._cond:
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        for worker in idle:
            worker.close()


_sandbox = Sandbox()


def sandbox() -> Sandbox:
    """The process-wide pool."""
    return _sandbox


def _reset_after_fork() -> None:
    # A forked child must not share its parent's pipes; it starts its own workers.
    global _sandbox
    _sandbox = Sandbox()


os.register_at_fork(after_in_child=_reset_after_fork)
atexit.register(lambda: _sandbox.close())
