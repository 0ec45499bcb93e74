"""Row claims: how several sweep workers share one run log without running anything twice.

Every worker enqueues the whole plan (idempotent: one ``run_claims`` row per run key), then
repeatedly claims a batch, runs it, records the runs and finishes the claims. A claim is a
lease: a worker that dies stops renewing, its lease passes and the runs return to the pool.
A key whose run is already logged is never handed out, so a worker killed between logging a
run and finishing its claim costs nothing but the claim row (and a late worker's enqueue may
re-add claims another worker already finished); ``prune`` drops such rows at the end.

On PostgreSQL the claim is ``SELECT ... FOR UPDATE SKIP LOCKED``: concurrent workers skip
each other's candidate rows instead of queueing behind them. SQLite has no row locks; there
the claim runs in a ``BEGIN IMMEDIATE`` transaction (see ``ratts.store.engine``), which holds
the database's single write lock, so claims serialise and the result is the same.

Leases are epoch seconds from each worker's clock: keep the machines' clocks synchronised
(NTP) to well within the lease length.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, func, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from ratts.store.models import run_claims, runs
from ratts.store.repository import RUN_KEY_COLUMNS, RunKey, Store

DEFAULT_LEASE_S = 300.0
_CHUNK = 500


def _key_in(keys: Sequence[RunKey]) -> ColumnElement[bool]:
    return tuple_(*(run_claims.c[n] for n in RUN_KEY_COLUMNS)).in_([tuple(k) for k in keys])


def _logged(*, include_failed: bool) -> ColumnElement[bool]:
    """A run with the claim's key is already in the log."""
    same = and_(*(runs.c[n] == run_claims.c[n] for n in RUN_KEY_COLUMNS))
    if not include_failed:
        same = and_(same, runs.c.error.is_(None))
    return exists(select(runs.c.id).where(same))


class WorkQueue:
    """The claims of one run log, used by a sweep worker named ``worker``."""

    def __init__(self, store: Store, worker: str, *, lease_s: float = DEFAULT_LEASE_S) -> None:
        self.store = store
        self.worker = worker
        self.lease_s = lease_s

    def enqueue(self, keys: Iterable[RunKey]) -> int:
        """Add the plan's keys (once each, whoever adds them); returns how many were new."""
        now = datetime.now(UTC)
        rows = [
            {**k._asdict(), "worker": None, "lease_until": None, "attempts": 0, "created_at": now}
            for k in dict.fromkeys(keys)
        ]

        def write(conn: Connection) -> int:
            added = 0
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            for start in range(0, len(rows), _CHUNK):
                stmt = (
                    dialect.insert(run_claims)
                    .values(rows[start : start + _CHUNK])
                    .on_conflict_do_nothing(index_elements=RUN_KEY_COLUMNS)
                    .returning(run_claims.c.repeat)
                )
                added += len(conn.execute(stmt).all())
            return added

        return self.store.write(write)

    def claim(
        self,
        limit: int,
        *,
        include_failed: bool = True,
        config_keys: Collection[str] | None = None,
    ) -> list[RunKey]:
        """Lease up to ``limit`` free, unlogged runs to this worker.

        Free: never claimed, or its lease has passed. With ``include_failed`` False a
        logged failure counts as not done (``--retry-failed``). ``config_keys`` limits the
        claim to those configs (the worker's own sweep).
        """
        now = time.time()
        free = or_(run_claims.c.lease_until.is_(None), run_claims.c.lease_until < now)
        query = (
            select(*(run_claims.c[n] for n in RUN_KEY_COLUMNS))
            .where(free, ~_logged(include_failed=include_failed))
            .order_by(run_claims.c.created_at, *(run_claims.c[n] for n in RUN_KEY_COLUMNS))
            .limit(limit)
            .with_for_update(skip_locked=True, of=run_claims)
        )
        if config_keys is not None:
            query = query.where(run_claims.c.config_key.in_(list(config_keys)))

        def write(conn: Connection) -> list[RunKey]:
            keys = [RunKey(*row) for row in conn.execute(query)]
            if keys:
                conn.execute(
                    update(run_claims)
                    .where(_key_in(keys))
                    .values(
                        worker=self.worker,
                        lease_until=now + self.lease_s,
                        attempts=run_claims.c.attempts + 1,
                    )
                )
            return keys

        return self.store.write(write)

    def renew(self, keys: Sequence[RunKey]) -> set[RunKey]:
        """Extend this worker's leases on ``keys``; returns the keys it still holds."""
        if not keys:
            return set()
        stmt = (
            update(run_claims)
            .where(_key_in(keys), run_claims.c.worker == self.worker)
            .values(lease_until=time.time() + self.lease_s)
            .returning(*(run_claims.c[n] for n in RUN_KEY_COLUMNS))
        )
        return self.store.write(lambda c: {RunKey(*row) for row in c.execute(stmt)})

    def finish(self, keys: Sequence[RunKey]) -> int:
        """Drop this worker's claims on ``keys`` (their runs are logged); returns how many."""
        if not keys:
            return 0
        stmt = (
            delete(run_claims)
            .where(_key_in(keys), run_claims.c.worker == self.worker)
            .returning(run_claims.c.repeat)
        )
        return self.store.write(lambda c: len(c.execute(stmt).all()))

    def release(self, keys: Sequence[RunKey] | None = None) -> int:
        """Hand this worker's claims (on ``keys``, default all) back to the pool."""
        if keys is not None and not keys:
            return 0
        mine = run_claims.c.worker == self.worker
        stmt = (
            update(run_claims)
            .where(mine if keys is None else and_(mine, _key_in(keys)))
            .values(worker=None, lease_until=None)
            .returning(run_claims.c.repeat)
        )
        return self.store.write(lambda c: len(c.execute(stmt).all()))

    def prune(self) -> int:
        """Drop every claim whose run is logged (a worker died between logging and
        finishing it); returns how many."""
        stmt = delete(run_claims).where(_logged(include_failed=True))
        return self.store.write(lambda c: int(c.execute(stmt).rowcount or 0))

    def pending(self, *, include_failed: bool = True) -> int:
        """Claims whose runs are not logged yet (held or free)."""
        query = (
            select(func.count())
            .select_from(run_claims)
            .where(~_logged(include_failed=include_failed))
        )
        return self.store.read(lambda c: int(c.execute(query).scalar_one()))

    def claims(self) -> list[dict[str, Any]]:
        """Every claim row as a dict (for reports and tests)."""
        query = select(run_claims).order_by(*(run_claims.c[n] for n in RUN_KEY_COLUMNS))
        return self.store.read(lambda c: [dict(r._mapping) for r in c.execute(query)])
