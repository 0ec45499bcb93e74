"""The simulator's opt-in knobs for the paper benchmark: terse errors and a terse-loving PRM.

Both default to 0, which must leave every sample and every reward exactly as before.
"""

from __future__ import annotations

import math

import httpx

from ratts.sim import SimConfig, SimServer, sim_config_from_dict, world
from ratts.sim.world import (
    REF_STEP_TOKENS,
    Draws,
    continue_solution,
    correctness,
    count_tokens,
    prm_rewards,
    problem_model,
    step_answer,
)

QUESTION = "[difficulty=0.9] Knob problem: evaluate the chain."
SEP = "\n\n"


def sample(key: int, terse: float | None) -> list[str]:
    problem = problem_model(QUESTION, 0)
    extra = {} if terse is None else {"terse_errors": terse}
    return list(
        continue_solution(
            problem,
            [],
            skill=0.3,
            rush=0.0,
            seed=0,
            draw=Draws(key, greedy=False),
            temperature=1.0,
            **extra,
        )
    )


def first_error(steps: list[str]) -> int | None:
    flags = correctness(problem_model(QUESTION, 0), steps)
    return next((i for i, ok in enumerate(flags) if not ok), None)


def test_terse_errors_shorten_only_the_step_that_goes_wrong() -> None:
    checked = 0
    for key in range(60):
        plain, default, terse = sample(key, None), sample(key, 0.0), sample(key, 0.75)
        assert default == plain  # the knob at 0 changes nothing
        assert len(terse) == len(plain)
        wrong = first_error(plain)
        assert first_error(terse) == wrong  # same draws: same values, same first error
        for i, (a, b) in enumerate(zip(plain, terse, strict=True)):
            if i == wrong:
                assert count_tokens(b) <= 13 + 3 and count_tokens(b) <= count_tokens(a)
                checked += 1
            else:
                assert a == b
    assert checked > 10  # difficulty 0.9 at skill 0.3: most samples go wrong somewhere


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_step_length_bias_adds_a_logit_per_token_on_value_steps_only() -> None:
    problem = problem_model(QUESTION, 0)
    steps = sample(3, None)
    assert step_answer(steps[-1]) is not None
    args = {"prm_name": "p", "quality": 2.0, "noise": 0.8, "length_bias": 0.0, "seed": 0}
    base = prm_rewards(problem, steps, **args)
    assert prm_rewards(problem, steps, step_length_bias=0.0, **args) == base
    biased = prm_rewards(problem, steps, step_length_bias=0.5, **args)
    for step, b, s in zip(steps, base, biased, strict=True):
        shift = 0.0 if step_answer(step) else 0.5 * (REF_STEP_TOKENS - count_tokens(step))
        assert math.isclose(_logit(s) - _logit(b), shift, abs_tol=1e-6)


def test_the_server_applies_both_knobs_from_its_config() -> None:
    cfg = sim_config_from_dict(
        {
            "policies": {"p": {"skill": 0.3, "terse_errors": 0.75}},
            "prms": {"r": {"quality": 2.0, "step_length_bias": 0.5}},
        }
    )
    assert cfg.policies["p"].terse_errors == 0.75 and cfg.prms["r"].step_length_bias == 0.5
    assert SimConfig().prms["sim-prm"].step_length_bias == 0.0
    assert SimConfig().policies["sim-weak"].terse_errors == 0.0
    steps = ["Step 1: we note that from x_0 = 1 we get x_1 = 2.", "Step 2: so x_2 = 3."]
    text = f"Problem: {QUESTION}\n\n" + "".join(s + "<extra_0>" for s in steps)
    problem = problem_model(QUESTION, 0)
    args = {"prm_name": "r", "quality": 2.0, "noise": 0.8, "length_bias": 0.0, "seed": 0}
    expected = prm_rewards(problem, steps, step_length_bias=0.5, **args)
    assert expected != prm_rewards(problem, steps, **args)  # the bias moves these rewards
    with SimServer(cfg) as server:
        resp = httpx.post(
            f"{server.base_url}/pooling", json={"model": "r", "input": [text]}, timeout=10
        )
        resp.raise_for_status()
        got = [pair[1] for pair in resp.json()["data"][0]["data"]]
        assert got == expected
        # the policy's knob reaches the server: its text is world.continue_solution's
        prompt = f"Problem: {QUESTION}\n\n"
        key = world.stable_hash(0, "p", prompt, "seed", 7, 0)
        want = SEP.join(
            continue_solution(
                problem,
                [],
                skill=0.3,
                rush=0.35,
                seed=0,
                draw=Draws(key, greedy=False),
                temperature=1.0,
                terse_errors=0.75,
            )
        )
        body = {"model": "p", "prompt": [prompt, prompt], "n": 1, "seed": 7, "max_tokens": 4096}
        resp = httpx.post(f"{server.v1_url}/completions", json=body, timeout=10)
        resp.raise_for_status()
        assert resp.json()["choices"][0]["text"] == want
        stats = httpx.get(f"{server.base_url}/sim/stats", timeout=10).json()
        assert stats["prompts"] == 2 and stats["choices"] == 2
        assert [i["choices"] for i in stats["intervals"]] == [1, 2]  # pooling input, n x prompts
