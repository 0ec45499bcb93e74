"""Shared fixtures: a simulated policy/PRM server on loopback and specs pointing at it, and
run-log databases on SQLite and on a real PostgreSQL server (see tests/pg_cluster.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pg_cluster import ENV, Cluster, PostgresUnavailable, cluster_from_env

from ratts.settings import PolicySpec, PRMSpec, Settings
from ratts.sim import SimConfig, SimServer


@pytest.fixture(scope="session")
def _sim_session() -> Iterator[SimServer]:
    with SimServer(SimConfig()) as server:
        yield server


@pytest.fixture
def sim(_sim_session: SimServer) -> SimServer:
    """The shared default-config sim server, with its counters zeroed for this test."""
    _sim_session.reset()
    return _sim_session


@pytest.fixture
def make_sim() -> Iterator[Callable[..., SimServer]]:
    """Factory: ``make_sim(supports_n=False, faults={"error_500": 1.0})`` -> a started server.

    Keyword arguments are SimConfig fields (nested sections as dicts); servers stop after
    the test.
    """
    servers: list[SimServer] = []

    def factory(**overrides: Any) -> SimServer:
        server = SimServer(SimConfig.model_validate(overrides)).start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def weak_policy_spec(sim: SimServer) -> PolicySpec:
    return PolicySpec(
        name="sim-weak",
        base_url=sim.v1_url,
        model="sim-weak",
        params=1e9,
        usd_per_mtok_prompt=0.1,
        usd_per_mtok_completion=0.4,
    )


@pytest.fixture
def strong_policy_spec(sim: SimServer) -> PolicySpec:
    return PolicySpec(
        name="sim-strong",
        base_url=sim.v1_url,
        model="sim-strong",
        params=7e10,
        usd_per_mtok_prompt=2.0,
        usd_per_mtok_completion=8.0,
    )


@pytest.fixture
def prm_spec(sim: SimServer) -> PRMSpec:
    return PRMSpec(name="sim-prm", kind="vllm_pooling", base_url=sim.base_url, model="sim-prm")


@pytest.fixture
def sim_settings(tmp_path: Any, weak_policy_spec: PolicySpec, prm_spec: PRMSpec) -> Settings:
    """One simulated policy and PRM, the run log in a temp SQLite file."""
    return Settings(
        db_url=f"sqlite:///{tmp_path / 'runs.db'}",
        data_dir=tmp_path / "data",
        policies=[weak_policy_spec],
        prms=[prm_spec],
    )


@pytest.fixture(scope="session")
def _pg_session() -> Iterator[Cluster | str]:
    """The test PostgreSQL server, or why there is none (a string)."""
    try:
        with cluster_from_env() as cluster:
            yield cluster
    except PostgresUnavailable as exc:
        yield str(exc)


@pytest.fixture
def postgres_url(_pg_session: Cluster | str) -> str:
    """A fresh, empty database on the test PostgreSQL server.

    Fails (does not skip) when there is no server, unless RATTS_TEST_POSTGRES=off says so.
    """
    if isinstance(_pg_session, str):
        if _pg_session == f"{ENV}=off":
            pytest.skip(f"PostgreSQL tests switched off ({ENV}=off)")
        pytest.fail(f"PostgreSQL tests need a server: {_pg_session}", pytrace=False)
    return _pg_session.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A fresh run-log URL, once on a SQLite file and once on real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runs.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
