"""Build endpoint clients from settings records, so callers never pick classes by hand."""

from __future__ import annotations

from ratts.endpoints.arithmetic import ArithmeticPRM
from ratts.endpoints.policy import PolicyClient
from ratts.endpoints.pool import RetryPolicy
from ratts.endpoints.prm import PRM
from ratts.endpoints.prm_judge import JudgePRM
from ratts.endpoints.prm_pooling import VllmPoolingPRM
from ratts.errors import ConfigError
from ratts.settings import PolicySpec, PRMSpec


def build_policy(spec: PolicySpec, *, retry: RetryPolicy | None = None) -> PolicyClient:
    """A PolicyClient for ``spec`` (reads the API key from the environment now)."""
    return PolicyClient(spec, retry=retry)


def build_prm(spec: PRMSpec, *, retry: RetryPolicy | None = None) -> PRM:
    """The PRM client for ``spec.kind``; ConfigError for an unknown kind.

    ``transformers`` is imported only when asked for: torch is an optional extra and slow
    to import.
    """
    if spec.kind == "vllm_pooling":
        return VllmPoolingPRM(spec, retry=retry)
    if spec.kind == "judge":
        return JudgePRM(spec, retry=retry)
    if spec.kind == "arithmetic":
        return ArithmeticPRM(spec)
    if spec.kind == "transformers":
        from ratts.endpoints.prm_transformers import TransformersPRM

        return TransformersPRM(spec)
    raise ConfigError(
        f"PRM {spec.name!r}: unknown kind {spec.kind!r}", endpoint=spec.name, role="PRM"
    )
