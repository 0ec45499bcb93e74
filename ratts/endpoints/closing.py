"""``async with`` for endpoint clients: one definition instead of one per client."""

from __future__ import annotations

from typing import Self


class AsyncClosing:
    """A client usable as ``async with client:``; leaving the block calls ``aclose``."""

    async def aclose(self) -> None:
        """Release the client's connections (a client without any keeps this no-op)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
