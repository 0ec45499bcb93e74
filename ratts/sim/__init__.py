"""Simulated policy + PRM HTTP server over a synthetic step-wise MDP (tests and benchmarks).

Every number it produces is a simulation; real-model results come from vLLM.
"""

from __future__ import annotations

from ratts.sim.app import create_app
from ratts.sim.config import (
    Capacity,
    Faults,
    SimConfig,
    SimPolicy,
    SimPRM,
    load_sim_config,
    sim_config_from_dict,
)
from ratts.sim.server import SimServer
from ratts.sim.world import count_tokens, difficulty, gold_answer, num_steps

__all__ = [
    "Capacity",
    "Faults",
    "SimConfig",
    "SimPRM",
    "SimPolicy",
    "SimServer",
    "count_tokens",
    "create_app",
    "difficulty",
    "gold_answer",
    "load_sim_config",
    "num_steps",
    "sim_config_from_dict",
]
