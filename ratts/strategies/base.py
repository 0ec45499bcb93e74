"""The Strategy protocol and the registry of strategies by name."""

from __future__ import annotations

from typing import ClassVar, Protocol

from ratts.endpoints.policy import PolicyClient
from ratts.endpoints.prm import PRM
from ratts.types import Outcome, Problem, StrategyParams


class Strategy(Protocol):
    """A test-time scaling strategy. Stateless: all knobs come in ``params``."""

    name: ClassVar[str]
    needs_prm: ClassVar[bool]

    def validate(self, params: StrategyParams) -> None:
        """Raise InvalidParamsError (one line) if params cannot work for this strategy."""
        ...

    async def run(
        self,
        problem: Problem,
        policy: PolicyClient,
        prm: PRM | None,
        params: StrategyParams,
    ) -> Outcome: ...
