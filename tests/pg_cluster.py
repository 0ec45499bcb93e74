"""A throw-away PostgreSQL cluster owned by the test run: initdb + pg_ctl on a temp dir.

The server listens on 127.0.0.1 at a free port with its unix socket inside the temp dir, so it
never meets a system cluster. initdb refuses to run as root, so under root the cluster
belongs to the ``postgres`` system user (Debian's package creates it) and every PostgreSQL
binary runs as that user.

``RATTS_TEST_POSTGRES`` chooses: unset or ``auto`` starts a cluster (and fails with a clear
message when the binaries are missing, so CI cannot pass without PostgreSQL); ``off`` skips
the PostgreSQL-parametrised tests explicitly; a ``postgresql://`` URL uses that server
instead (its user must be allowed to create databases).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

ENV = "RATTS_TEST_POSTGRES"
_SEARCH = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin", "/opt/homebrew/opt/postgresql*/bin")


class PostgresUnavailable(RuntimeError):
    """No way to run the PostgreSQL tests here (the message says how to get one)."""


def find_bindir() -> Path | None:
    """The newest PostgreSQL server bin directory (one holding initdb and pg_ctl)."""
    candidates = [Path(p) for pattern in _SEARCH for p in glob.glob(pattern)]
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    usable = [d for d in candidates if (d / "initdb").exists() and (d / "pg_ctl").exists()]
    return max(usable, key=lambda d: d.as_posix()) if usable else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """A running server; ``new_database()`` gives each test its own empty database."""

    def __init__(self, admin_url: str, stop: contextlib.ExitStack | None = None) -> None:
        self.admin_url = admin_url
        self._stop = stop

    def new_database(self) -> str:
        """A fresh database; returns its SQLAlchemy URL (psycopg 3 driver)."""
        import psycopg  # imported here so that RATTS_TEST_POSTGRES=off needs no driver

        name = f"ratts_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        base = self.admin_url.rsplit("/", 1)[0]
        return f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"

    def close(self) -> None:
        if self._stop is not None:
            self._stop.close()


def _as_owner(owner: pwd.struct_passwd | None) -> dict[str, object]:
    """subprocess keyword arguments that run a binary as the cluster's owner."""
    if owner is None:
        return {}
    return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}


def start_cluster() -> Cluster:
    """Start a private cluster; raises PostgresUnavailable with the fix in its message."""
    bindir = find_bindir()
    if bindir is None:
        raise PostgresUnavailable(
            "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin and on "
            "PATH): install them (Debian: apt-get install -y postgresql; .ci/run does this), "
            f"or set {ENV}=postgresql://user@host:port/db to use a running server, "
            f"or {ENV}=off to skip the PostgreSQL tests"
        )
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailable(
                "running as root and there is no 'postgres' user to own the test cluster "
                "(initdb refuses root): create one (useradd -r postgres) or run as another user"
            ) from None
    stack = contextlib.ExitStack()
    root = Path(tempfile.mkdtemp(prefix="ratts-pg-"))
    stack.callback(shutil.rmtree, root, ignore_errors=True)
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    data = root / "data"
    run = {"check": True, "capture_output": True, "text": True, **_as_owner(owner)}
    try:
        subprocess.run(  # type: ignore[call-overload]
            [
                bindir / "initdb",
                "-D",
                data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ],
            **run,
        )
        port = _free_port()
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        subprocess.run(  # type: ignore[call-overload]
            [
                bindir / "pg_ctl",
                "-D",
                data,
                "-o",
                options,
                "-l",
                root / "server.log",
                "-w",
                "-t",
                "60",
                "start",
            ],
            **run,
        )
    except subprocess.CalledProcessError as exc:
        log = root / "server.log"
        tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
        stack.close()
        raise PostgresUnavailable(
            f"could not start a test PostgreSQL cluster with {bindir}: "
            f"{(exc.stderr or exc.stdout or '').strip()} {tail}".strip()
        ) from None
    stack.callback(
        subprocess.run,
        [bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
        capture_output=True,
        **_as_owner(owner),
    )
    return Cluster(f"postgresql://postgres@127.0.0.1:{port}/postgres", stack)


@contextlib.contextmanager
def cluster_from_env() -> Iterator[Cluster]:
    """The cluster ``RATTS_TEST_POSTGRES`` asks for (see the module docstring)."""
    choice = os.environ.get(ENV, "auto").strip()
    if choice.lower() == "off":
        raise PostgresUnavailable(f"{ENV}=off")
    cluster = Cluster(choice) if "://" in choice else start_cluster()
    try:
        yield cluster
    finally:
        cluster.close()
