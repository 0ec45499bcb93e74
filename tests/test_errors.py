"""Errors carry data (endpoint, role, URL, HTTP status, field), set where they are raised,
and the server builds OpenAI's error shape from those fields, never from the message text.

Endpoint failures are real: a simulator answering 500 or 404 and a port nobody listens on.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from ratts.endpoints.factory import build_policy, build_prm
from ratts.errors import (
    ConfigError,
    EndpointUnreachableError,
    InputError,
    InvalidParamsError,
    RattsError,
    RequestRejectedError,
    ServerError,
)
from ratts.server import ServerThread, create_app
from ratts.server.app import api_error
from ratts.settings import PolicySpec, PRMSpec, Settings
from ratts.sim import SimConfig, SimServer
from ratts.strategies import get_strategy
from ratts.types import Problem, StrategyParams

MakeSim = Callable[..., SimServer]


def dead_url() -> str:
    """A loopback URL where nothing listens (the port was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def policy_at(base_url: str, *, name: str = "pol", model: str = "sim-weak") -> PolicySpec:
    return PolicySpec(name=name, base_url=base_url, model=model, params=1e9, max_retries=0)


def dead_prm() -> PRMSpec:
    return PRMSpec(
        name="prm-down", kind="vllm_pooling", base_url=dead_url(), model="m", max_retries=0
    )


# ---------------------------------------------------------------- fields set where raised


async def test_a_server_error_names_its_endpoint_role_url_and_status(make_sim: MakeSim) -> None:
    broken = make_sim(faults={"error_500": 1.0})
    client = build_policy(policy_at(broken.v1_url))
    try:
        with pytest.raises(ServerError) as err:
            await client.complete("2+2=", max_tokens=4)
    finally:
        await client.aclose()
    e = err.value
    assert e.fields() == {"endpoint": "pol", "role": "policy", "url": broken.v1_url, "status": 500}
    assert e.code == "endpoint_server_error" and "\n" not in str(e)


async def test_a_refused_request_keeps_the_servers_status(sim: SimServer) -> None:
    client = build_policy(policy_at(sim.v1_url, model="no-such-model"))
    try:
        with pytest.raises(RequestRejectedError) as err:
            await client.complete("2+2=", max_tokens=4)
    finally:
        await client.aclose()
    assert (err.value.status, err.value.role, err.value.endpoint) == (404, "policy", "pol")
    assert err.value.code == "endpoint_rejected_request"


async def test_an_unreachable_prm_says_it_is_the_prm() -> None:
    spec = dead_prm()
    prm = build_prm(spec)
    try:
        with pytest.raises(EndpointUnreachableError) as err:
            await prm.score("q", [["step"]])
    finally:
        await prm.aclose()
    assert err.value.role == "PRM" and err.value.endpoint == "prm-down"
    assert err.value.status is None
    assert err.value.url is not None and err.value.url.startswith(str(spec.base_url))


def test_config_and_param_errors_name_their_field(weak_policy_spec: PolicySpec) -> None:
    settings = Settings(policies=[weak_policy_spec], prms=[])
    with pytest.raises(ConfigError) as err:
        settings.policy("PRM-like-name")
    assert err.value.param == "policy"  # the message says "PRM"; the field says policy
    with pytest.raises(ConfigError) as err:
        settings.prm("x")
    assert err.value.param == "prm"
    cases: list[tuple[str, StrategyParams, str]] = [
        ("beam_search", StrategyParams(n=6, beam_width=4), "n"),
        ("dvts", StrategyParams(n=4, beam_width=0), "beam_width"),
        ("cot", StrategyParams(n=3), "n"),
        ("majority", StrategyParams(n=2, max_tokens=0), "max_tokens"),
    ]
    for name, params, field in cases:
        with pytest.raises(InvalidParamsError) as perr:
            get_strategy(name).validate(params)
        assert perr.value.param == field, name


async def test_strategy_input_errors_name_their_field(
    sim: SimServer, weak_policy_spec: PolicySpec
) -> None:
    policy = build_policy(weak_policy_spec)
    try:
        with pytest.raises(InvalidParamsError) as err:
            await get_strategy("best_of_n").run(
                Problem(id="p", question="1+1?"), policy, None, StrategyParams(n=2)
            )
        assert err.value.param == "prm"
        with pytest.raises(InputError) as ierr:
            await get_strategy("cot").run(
                Problem(id="p", question=" "), policy, None, StrategyParams()
            )
        assert ierr.value.param == "question"
    finally:
        await policy.aclose()


# ---------------------------------------------------------------- the OpenAI shape


def test_api_error_reads_fields_not_message_text() -> None:
    # Messages that mention "PRM"/"policy" no longer decide the param.
    assert api_error(ConfigError("the PRM and policy are fine")).param is None
    assert api_error(ConfigError("unknown policy 'PRM-x'", param="policy")).param == "policy"
    bad_n = api_error(InvalidParamsError("N must be 1", param="n"))
    assert (bad_n.status, bad_n.kind, bad_n.param, bad_n.code) == (
        400,
        "invalid_request_error",
        "budget",
        "invalid_params",
    )
    # a field the chat request cannot set has no request param
    assert api_error(InvalidParamsError("M must be positive", param="beam_width")).param is None
    down = api_error(ServerError("PRM 'p' failed", endpoint="p", role="PRM", status=503))
    assert (down.status, down.kind, down.param, down.code) == (
        502,
        "upstream_error",
        "prm",
        "endpoint_server_error",
    )
    other = api_error(RattsError("something odd"))
    assert (other.status, other.kind, other.code) == (500, "server_error", "ratts_error")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for every case: a healthy policy, one answering 500, an unreachable PRM."""
    tmp = tmp_path_factory.mktemp("errors")
    with (
        SimServer(SimConfig()) as good,
        SimServer(SimConfig.model_validate({"faults": {"error_500": 1.0}})) as broken,
    ):
        settings = Settings(
            db_url=f"sqlite:///{tmp / 'runs.db'}",
            data_dir=tmp / "data",
            policies=[policy_at(good.v1_url), policy_at(broken.v1_url, name="pol-500")],
            prms=[dead_prm()],
        )
        with ServerThread(create_app(settings, token="")) as running:
            yield f"{running.v1_url}/chat/completions"


def post(url: str, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "What is 2+2?"}], **extra}
    return httpx.post(url, json=body, timeout=30)


@pytest.mark.parametrize(
    ("model", "extra", "status", "kind", "param", "code"),
    [
        (
            "ratts/beam_search",
            {"budget": 6},
            400,
            "invalid_request_error",
            "budget",
            "invalid_params",
        ),
        ("ratts/cot", {"policy": "PRM-x"}, 400, "invalid_request_error", "policy", "config_error"),
        ("ratts/best_of_n", {"prm": "nope"}, 400, "invalid_request_error", "prm", "config_error"),
        ("ratts/best_of_n", {"budget": 2}, 502, "upstream_error", "prm", "endpoint_unreachable"),
        (
            "ratts/cot",
            {"policy": "pol-500"},
            502,
            "upstream_error",
            "policy",
            "endpoint_server_error",
        ),
    ],
)
def test_server_maps_error_fields_to_openai_shape(
    served: str, model: str, extra: dict[str, Any], status: int, kind: str, param: str, code: str
) -> None:
    resp = post(served, model, **extra)
    assert resp.status_code == status
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == (kind, param, code)
    assert error["message"] and "\n" not in error["message"]
