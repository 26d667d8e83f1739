"""Extension numbers: from the starting number upward, never a number in use.

Skipped: every number on the PBX (users and groups), every number allocated
to another owner, and numbers released less than ``extension_reuse_days``
ago. Numbers keep 3-13 digits and stay at or below ``last_extension_number``.
"""

from __future__ import annotations

MAX_EXTENSION = 9_999_999_999_999  # 13 digits


class RangeExhausted(Exception):
    """No free number is left in the configured range."""


class NumberAllocator:
    def __init__(self, start: str, last: str | None, unavailable: set[str]) -> None:
        self._next = int(start)
        self._last = min(int(last), MAX_EXTENSION) if last else MAX_EXTENSION
        self._unavailable = set(unavailable)
        self._range = f"{start}-{last}" if last else f"{start} upward (13 digits at most)"

    def take(self) -> str:
        """The lowest free number; RangeExhausted when none is left."""
        while self._next <= self._last:
            candidate = str(self._next)
            self._next += 1
            if candidate not in self._unavailable:
                self._unavailable.add(candidate)
                return candidate
        raise RangeExhausted(f"no free extension number left in {self._range}")

    def claim(self, number: str) -> None:
        """Reserve a specific number (an owner's own earlier number) so take() skips it."""
        self._unavailable.add(number)
