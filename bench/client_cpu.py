"""Client CPU per policy request: ratts's PolicyClient vs bare aiohttp and httpx loops.

The same requests (one prompt, ``n`` choices, a stop string, a seed; the response body parsed
as JSON) go to ``ratts sim serve`` in its own process, at the same concurrency, from:

- ``bare-aiohttp``: an ``aiohttp.ClientSession`` loop (``json.dumps`` the body, ``json.loads``
  the reply, check the choice count);
- ``bare-httpx``: the same loop with ``httpx.AsyncClient``;
- ``ratts``: ``PolicyClient.complete`` (the endpoint pool's admission and retry loop, the
  parse into Choices and Usage).

Each mode runs ``--rounds`` times, interleaved (A B C A B C ...) so drift on a shared machine
hits all of them alike; the figure is this process's CPU seconds (``resource.getrusage``,
user + system) per request, median over rounds. The server's CPU is its own process's and
is not counted. Target: ratts <= 1.5x the cheaper bare loop. Rounds are short (a fraction
of a CPU-second for the aiohttp modes), so a single round moves by a third on a shared
machine; five rounds of 2000 requests keep the median steady.

Usage: ``.venv/bin/python bench/client_cpu.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from simproc import SimProcess, simulator

from ratts.endpoints.policy import PolicyClient
from ratts.endpoints.responses import StopReading, parse_completion
from ratts.settings import PolicySpec
from ratts.sim import SimConfig, SimPolicy

OUT = Path(__file__).resolve().parent / "results"
MODEL = "sim-policy"
TARGET_RATIO = 1.5
STOP = ["\n\n"]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _prompt(i: int) -> str:
    return f"Problem {i}: follow the recurrence x_k = (a_k x_(k-1) + b_k) mod 10007.\n\n"


def _payload(i: int, n: int) -> dict[str, Any]:
    """The body every mode sends for request ``i`` (what PolicyClient builds)."""
    return {
        "model": MODEL,
        "prompt": _prompt(i),
        "max_tokens": 64,
        "temperature": 0.8,
        "top_p": 1.0,
        "stop": STOP,
        "n": n,
        "seed": i,
    }


async def _drive(count: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> None:
    """``count`` calls of ``one``, ``concurrency`` in flight (a pool kept full)."""
    next_i = 0

    async def worker() -> None:
        nonlocal next_i
        while next_i < count:
            i = next_i
            next_i += 1
            await one(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def bare_aiohttp(url: str, count: int, concurrency: int, n: int) -> None:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            body = json.dumps(_payload(i, n)).encode()
            async with session.post(
                f"{url}/completions", data=body, headers={"content-type": "application/json"}
            ) as resp:
                resp.raise_for_status()
                parsed = json.loads(await resp.read())
            if len(parsed["choices"]) != n:
                raise RuntimeError("wrong choice count")

        await _drive(count, concurrency, one)


async def bare_httpx(url: str, count: int, concurrency: int, n: int) -> None:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one(i: int) -> None:
            body = json.dumps(_payload(i, n)).encode()
            resp = await client.post(
                f"{url}/completions", content=body, headers={"content-type": "application/json"}
            )
            resp.raise_for_status()
            parsed = json.loads(resp.content)
            if len(parsed["choices"]) != n:
                raise RuntimeError("wrong choice count")

        await _drive(count, concurrency, one)


async def ratts_client(url: str, count: int, concurrency: int, n: int) -> None:
    spec = PolicySpec(name=MODEL, base_url=url, model=MODEL, max_concurrency=concurrency * n)
    async with PolicyClient(spec) as client:

        async def one(i: int) -> None:
            result = await client.complete(
                _prompt(i), n=n, stop=STOP, max_tokens=64, temperature=0.8, seed=i
            )
            if len(result.choices) != n:
                raise RuntimeError("wrong choice count")

        await _drive(count, concurrency, one)


MODES: dict[str, Callable[[str, int, int, int], Awaitable[None]]] = {
    "bare-aiohttp": bare_aiohttp,
    "bare-httpx": bare_httpx,
    "ratts": ratts_client,
}


# ``--layers``: ratts's stack cut at each layer (a diagnostic: these reach past the public
# API on purpose), so the gap between the bare loop and ``ratts`` shows where it is.


def _layer(
    depth: str,
) -> Callable[[str, int, int, int], Awaitable[None]]:
    async def run(url: str, count: int, concurrency: int, n: int) -> None:
        spec = PolicySpec(name=MODEL, base_url=url, model=MODEL, max_concurrency=concurrency * n)
        async with PolicyClient(spec) as client:
            http = client._pool.replicas[0].http
            params = client._body(_prompt(0), n, STOP, 64, 0.8, 1.0, None)
            reading = StopReading("auto", tuple(STOP))

            async def one(i: int) -> None:
                body = {**params, "prompt": _prompt(i)}
                if depth == "http":
                    got = len(
                        json.loads(await http.request("/completions", _payload(i, n)))["choices"]
                    )
                elif depth == "parse":
                    raw = json.loads(await http.request("/completions", _payload(i, n)))
                    got = len(parse_completion(raw, n, reading, short_ok=True).choices)
                elif depth == "attempt":
                    got = len((await client._attempt(body, n, i, http)).choices)
                elif depth == "pool_call":
                    attempt = functools.partial(client._attempt, body, n, i)
                    got = len((await client._pool.call(attempt, seqs=n)).value.choices)
                else:  # "rounds": top-up rounds, the seeded split, the usage sums
                    got = len((await client._complete(_prompt(i), body, n, i)).choices)
                if got != n:
                    raise RuntimeError("wrong choice count")

            await _drive(count, concurrency, one)

    return run


LAYERS = {f"ratts-{d}": _layer(d) for d in ("http", "parse", "attempt", "pool_call", "rounds")}


def measure(
    sim: SimProcess,
    fn: Callable[[str, int, int, int], Awaitable[None]],
    count: int,
    concurrency: int,
    n: int,
) -> dict[str, float]:
    cpu0, t0 = _cpu(), time.perf_counter()
    asyncio.run(fn(sim.v1_url, count, concurrency, n))
    wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
    return {"cpu_ms_per_request": 1000 * cpu / count, "wall_s": wall, "cpu_s": cpu}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests per mode per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=16, help="HTTP requests in flight")
    ap.add_argument("-n", type=int, default=4, help="choices per request")
    ap.add_argument("--out", type=Path, default=OUT / "client_cpu.json")
    ap.add_argument(
        "--layers",
        action="store_true",
        help="also ratts's stack cut at each layer (JsonHttp, +parse, +attempt, +pool call, "
        "+rounds), to see where its extra CPU is",
    )
    args = ap.parse_args(argv)
    modes = {**MODES, **(LAYERS if args.layers else {})}

    config = SimConfig(seed=0, policies={MODEL: SimPolicy(skill=0.5, params=1.5e9)})
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    with simulator(config) as sim:
        for fn in modes.values():  # warm-up: imports, connections, the server's caches
            measure(sim, fn, min(100, args.requests), args.concurrency, args.n)
        for _ in range(args.rounds):
            for mode, fn in modes.items():
                runs[mode].append(measure(sim, fn, args.requests, args.concurrency, args.n))
    median = {m: statistics.median(r["cpu_ms_per_request"] for r in rs) for m, rs in runs.items()}
    bare = min(median["bare-aiohttp"], median["bare-httpx"])
    ratio = median["ratts"] / bare
    result = {
        "bench": "client_cpu",
        "note": "client CPU only; the server is the simulator in its own process",
        "requests_per_round": args.requests,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "n": args.n,
        "median_cpu_ms_per_request": median,
        "ratio_ratts_to_cheaper_bare": ratio,
        "ratio_ratts_to_bare_httpx": median["ratts"] / median["bare-httpx"],
        "ratio_ratts_to_bare_aiohttp": median["ratts"] / median["bare-aiohttp"],
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO,
        "runs": runs,
        "python": sys.version.split()[0],
        "machine": platform.platform(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for mode, value in median.items():
        print(f"{mode:<13} {value:6.3f} CPU-ms/request (median of {args.rounds})")
    print(f"ratts / cheaper bare loop = {ratio:.2f} (target <= {TARGET_RATIO}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
