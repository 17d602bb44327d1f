"""What the broadcaster's pub/sub tests share: a listener that records what a reader or a
backend reports, and a wait for a condition on it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


class Heard:
    """A listener that records what a pub/sub reader or backend reports."""

    def __init__(self) -> None:
        self.lost = 0
        self.published: list[tuple[str, bytes]] = []

    def on_published(self, channel: str, data: Any) -> None:
        self.published.append((channel, data))

    def on_lost(self) -> None:
        self.lost += 1


async def until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``predicate`` until it holds; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not come true in time")
        await asyncio.sleep(0.01)
