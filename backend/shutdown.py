"""The shutdown grace: when it began, and how much of it is left for each closing step."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass
class ShutdownClock:
    """Started by the first on_shutdown hook; read by the steps that wait on something."""

    grace: float
    deadline: float | None = None

    def begin(self) -> None:
        if self.deadline is None:
            self.deadline = asyncio.get_running_loop().time() + self.grace

    def remaining(self) -> float:
        """Seconds left (the whole grace when shutdown has not begun)."""
        if self.deadline is None:
            return self.grace
        return max(self.deadline - asyncio.get_running_loop().time(), 0.0)
