"""Start-up import trimming: building a router over a store and importing the endpoint
clients leave scikit-learn, skops and the openai SDK unimported (``ratts serve`` start-up
and ``ratts router show`` depend on it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import sys, tempfile
from ratts.endpoints import PolicyClient  # noqa: F401
from ratts.router.router import Router
from ratts.settings import Settings
from ratts.store import open_store

d = tempfile.mkdtemp()
settings = Settings(db_url=f"sqlite:///{d}/runs.db", data_dir=d)
router = Router(settings, open_store(settings.db_url))
assert router.current().trained is None
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"sklearn", "skops", "openai"})
print(",".join(heavy) or "none")
"""


def test_router_and_clients_do_not_import_sklearn_skops_or_openai(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"


SHOW = """
import sys
from ratts.cli import main

sys.argv = ["ratts", "router", "show", "--db", sys.argv[1]]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
heavy = {"sklearn", "skops", "openai", "matplotlib", "aiohttp", "httpx", "numpy", "alembic"}
loaded = {m.split(".")[0] for m in sys.modules} & heavy
loaded |= {m for m in ("ratts.router", "ratts.strategies", "sqlalchemy.orm") if m in sys.modules}
print(",".join(sorted(loaded)) or "none")
"""


def test_router_show_on_an_empty_database_imports_nothing_heavy(tmp_path: Path) -> None:
    """``ratts router show`` only lists rows: no router package, no HTTP clients, no
    scikit-learn, no SQLAlchemy ORM, and (on a database already at head) no Alembic."""
    url = f"sqlite:///{tmp_path}/runs.db"
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    first = subprocess.run(  # creates the schema (Alembic runs here, once)
        [sys.executable, "-c", SHOW, url], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr
    assert "no trained router yet" in first.stdout
    again = subprocess.run(
        [sys.executable, "-c", SHOW, url], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == "none"
