"""Talking to models: policy completions, PRMs, retries and usage accounting (lowest layer).

Names are imported lazily so that light modules (``ratts.types`` needs only ``Usage``) and the
CLI's start-up do not pay for the openai SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ratts.lazy import lazy_getattr

if TYPE_CHECKING:
    from ratts.endpoints.arithmetic import ArithmeticPRM
    from ratts.endpoints.factory import build_policy, build_prm
    from ratts.endpoints.policy import Choice, CompletionResult, Policy, PolicyClient
    from ratts.endpoints.pool import EndpointPool, RetryPolicy
    from ratts.endpoints.prm import PRM, PRMResult
    from ratts.endpoints.prm_judge import JudgePRM
    from ratts.endpoints.prm_pooling import VllmPoolingPRM
    from ratts.endpoints.usage import Usage, sum_usage

_WHERE = {
    "ArithmeticPRM": ".arithmetic",
    "build_policy": ".factory",
    "build_prm": ".factory",
    "Choice": ".policy",
    "CompletionResult": ".policy",
    "Policy": ".policy",
    "PolicyClient": ".policy",
    "EndpointPool": ".pool",
    "RetryPolicy": ".pool",
    "PRM": ".prm",
    "PRMResult": ".prm",
    "JudgePRM": ".prm_judge",
    "VllmPoolingPRM": ".prm_pooling",
    "Usage": ".usage",
    "sum_usage": ".usage",
}

__all__ = [
    "PRM",
    "ArithmeticPRM",
    "Choice",
    "CompletionResult",
    "EndpointPool",
    "JudgePRM",
    "PRMResult",
    "Policy",
    "PolicyClient",
    "RetryPolicy",
    "Usage",
    "VllmPoolingPRM",
    "build_policy",
    "build_prm",
    "sum_usage",
]


__getattr__ = lazy_getattr(__name__, _WHERE)
