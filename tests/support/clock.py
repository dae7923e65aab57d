"""A hand-moved wall clock for tests that drive the fake Bybit and the signing client in step."""

from __future__ import annotations


class Clock:
    """Wall time that a test moves by hand, shared by the fake and the signing client."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def forward(self, ms: int) -> None:
        self.now += ms / 1000
