"""Talking to models: policy completions, PRMs, retries and usage accounting (lowest layer)."""

from __future__ import annotations

from ratts.endpoints.arithmetic import ArithmeticPRM
from ratts.endpoints.factory import build_policy, build_prm
from ratts.endpoints.policy import Choice, CompletionResult, PolicyClient
from ratts.endpoints.pool import EndpointPool, RetryPolicy
from ratts.endpoints.prm import PRM, PRMResult
from ratts.endpoints.prm_judge import JudgePRM
from ratts.endpoints.prm_pooling import VllmPoolingPRM
from ratts.endpoints.usage import Usage, sum_usage

__all__ = [
    "PRM",
    "ArithmeticPRM",
    "Choice",
    "CompletionResult",
    "EndpointPool",
    "JudgePRM",
    "PRMResult",
    "PolicyClient",
    "RetryPolicy",
    "Usage",
    "VllmPoolingPRM",
    "build_policy",
    "build_prm",
    "sum_usage",
]
