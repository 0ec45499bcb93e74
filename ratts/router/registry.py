"""Router versions: skops artifacts on disk, their records in the store, the current one.

Why skops and a checksum: a router artifact is code-adjacent data that a server loads on
its own. skops never unpickles; it rebuilds only the types we list in TRUSTED and reports
anything else, which we refuse. The artifact's sha256 is recorded in the store when it is
registered and checked on every load, so a file swapped or edited on disk is refused with
one line instead of being half-trusted.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from ratts.errors import RouterError, StoreError
from ratts.router.splits import text_key
from ratts.store import Store
from ratts.store.engine import begin_write, retry_locked
from ratts.store.models import router_models

if TYPE_CHECKING:
    # skops and scikit-learn take seconds to import: only saving or loading an artifact
    # pays for them, so listing versions (``ratts router show``) stays instant.
    from ratts.router.model import TrainedRouter

SHA_KEY = "artifact_sha256"
SUFFIX = ".skops"

# Everything a TrainedRouter artifact may contain beyond skops' own defaults (builtins,
# numpy arrays and the scikit-learn types skops trusts out of the box).
TRUSTED: list[str] = [
    "ratts.router.model.TrainedRouter",
    "ratts.router.model.RouterModel",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_artifact(router: TrainedRouter, path: Path) -> str:
    """Write ``router`` with skops (atomically: temp file + rename); returns its sha256."""
    import skops.io as sio

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        sio.dump(router, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise RouterError(f"cannot write router artifact {path}: {exc.strerror}") from None
    return sha256_file(path)


def load_artifact(path: Path, sha256: str | None) -> TrainedRouter:
    """Load an artifact after checking its checksum and that it holds only trusted types."""
    import skops.io as sio

    from ratts.router.model import TrainedRouter

    if not path.is_file():
        raise RouterError(f"router artifact not found: {path}")
    if not sha256:
        raise RouterError(f"router artifact {path} has no recorded sha256; refusing to load it")
    actual = sha256_file(path)
    if actual != sha256:
        raise RouterError(
            f"router artifact {path} does not match its recorded sha256 (modified or "
            "corrupted); refusing to load it - retrain with `ratts router train`"
        )
    try:
        untrusted = [t for t in sio.get_untrusted_types(file=path) if t not in TRUSTED]
    except Exception as exc:  # skops raises assorted errors on a malformed file
        raise RouterError(f"router artifact {path} is not a valid skops file: {exc}") from None
    if untrusted:
        raise RouterError(
            f"router artifact {path} holds untrusted types ({', '.join(untrusted)}); "
            "refusing to load it"
        )
    try:
        router = sio.load(path, trusted=TRUSTED)
    except Exception as exc:
        raise RouterError(f"cannot load router artifact {path}: {exc}") from None
    if not isinstance(router, TrainedRouter):
        raise RouterError(f"router artifact {path} does not hold a trained router")
    return router


# ---------------------------------------------------------------- versions in the store

_VERSION = re.compile(r"^v?(\d+)$")


def version_number(version: str) -> int | None:
    found = _VERSION.match(version.strip())
    return int(found.group(1)) if found else None


def normalize_version(version: str) -> str:
    """``3`` or ``v3`` -> ``v3``; anything else as given."""
    number = version_number(version)
    return f"v{number}" if number is not None else version.strip()


def next_version(store: Store) -> str:
    numbers = [version_number(str(r["version"])) for r in store.router_models()]
    return f"v{max([n for n in numbers if n is not None], default=0) + 1}"


def register(
    store: Store,
    router: TrainedRouter,
    directory: Path,
    metrics: dict[str, Any],
    *,
    make_current: bool = True,
) -> str:
    """Save ``router`` as the next version (n+1), record it with its sha256, make it current.

    Retries the version number if another process registered the same one meanwhile.
    """
    for _ in range(5):
        version = next_version(store)
        path = directory / f"router-{version}{SUFFIX}"
        if path.exists():
            path = directory / f"router-{version}-{os.getpid()}{SUFFIX}"
        sha = save_artifact(router, path)
        try:
            store.save_router_model(
                version,
                rows_used=router.rows,
                metrics={**metrics, SHA_KEY: sha},
                artifact_path=str(path.resolve()),
                make_current=make_current,
            )
        except StoreError as exc:
            path.unlink(missing_ok=True)
            if "already registered" in str(exc):
                continue
            raise
        return version
    raise RouterError("could not allocate a router version (too many concurrent trainings)")


def versions(store: Store) -> list[dict[str, Any]]:
    """Every registered version, oldest first (plain dicts from the store)."""
    return store.router_models()


def use(store: Store, version: str) -> str:
    """Make ``version`` the current router (after checking its artifact loads)."""
    wanted = normalize_version(version)
    rows = {str(r["version"]): r for r in store.router_models()}
    if wanted not in rows:
        known = ", ".join(rows) or "none"
        raise RouterError(f"unknown router version {version!r}; registered: {known}")
    row = rows[wanted]
    load_artifact(Path(row["artifact_path"]), (row["metrics"] or {}).get(SHA_KEY))

    def write() -> None:
        with begin_write(store.engine) as conn:
            conn.execute(update(router_models).values(is_current=router_models.c.version == wanted))

    try:
        retry_locked(write)
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise StoreError(f"cannot switch the router to {wanted}: {detail}") from None
    return wanted


class RouterRegistry:
    """The current trained router of a store, reloaded whenever the current version changes.

    ``current()`` asks the store which version is current on every call (one small query),
    so a long-lived server picks up ``ratts router train`` / ``ratts router use`` without a
    restart. Thread-safe.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._loaded: tuple[str, TrainedRouter] | None = None

    def current(self) -> tuple[str, TrainedRouter] | None:
        row = self.store.current_router_model()
        if row is None:
            return None
        version = str(row["version"])
        with self._lock:
            if self._loaded is not None and self._loaded[0] == version:
                return self._loaded
            router = load_artifact(Path(row["artifact_path"]), (row["metrics"] or {}).get(SHA_KEY))
            self._loaded = (version, router)
            return self._loaded


SHIPPED = Path(__file__).resolve().parent / "shipped"  # routers trained by ratts' benches


def install_shipped(
    store: Store,
    name: str,
    directory: Path = SHIPPED,
    *,
    disjoint_from: Sequence[str] = (),
) -> tuple[str, dict[str, Any]]:
    """Register the shipped router ``name`` (``<name>.skops`` with its ``<name>.json``:
    sha256, provenance, training summary, the text hashes of its training problems) as
    the store's current version, after checking the artifact loads under that checksum.
    RouterError (one line) when it is missing, does not match, or was trained on one of
    the questions ``disjoint_from``; the caller then routes with the cold start."""
    import json

    meta_path = directory / f"{name}.json"
    artifact = directory / f"{name}{SUFFIX}"
    if not meta_path.is_file() or not artifact.is_file():
        raise RouterError(f"no shipped router {name!r} in {directory}")
    meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
    seen = set(meta.get("train_text_hashes") or [])
    overlap = sum(text_key(q) in seen for q in disjoint_from)
    if overlap:
        raise RouterError(f"shipped router {name!r} was trained on {overlap} of these questions")
    router = load_artifact(artifact, str(meta.get(SHA_KEY) or ""))
    version = next_version(store)
    store.save_router_model(
        version,
        rows_used=router.rows,
        metrics={**meta, "shipped": name},
        artifact_path=str(artifact),
        make_current=True,
    )
    return version, meta
