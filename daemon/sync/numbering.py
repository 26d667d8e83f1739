"""Extension numbers for users and groups: one rule, one shared pool.

A number is never handed out while it is on the PBX (users and groups),
allocated to another owner, or released less than ``extension_reuse_days``
ago. Users count from ``starting_extension_number`` (up to
``last_extension_number``), groups from ``groups_starting_extension_number``;
both draw from the same pool of unavailable numbers, so they never collide.
Numbers keep 3-13 digits.
"""

from __future__ import annotations

from collections.abc import Iterable

from daemon.errors import RangeExhausted

MAX_EXTENSION = 9_999_999_999_999  # 13 digits
DAY = 86400.0

Allocation = tuple[str, str, str, float | None]  # number, owner kind, owner graph id, released_at


class NumberPool:
    """The numbers no one may take now, and each owner's earlier number."""

    def __init__(self, pbx_numbers: Iterable[str], allocations: Iterable[Allocation], now: float,
                 reuse_days: int) -> None:
        self.unavailable = set(pbx_numbers)
        self.pbx_numbers = frozenset(self.unavailable)
        self.owner_numbers: dict[str, str] = {}  # "kind:graph id" -> its live (or last) number
        self.live: dict[str, str] = {}  # number -> "kind:graph id" while allocated
        for number, kind, owner, released_at in allocations:
            key = f"{kind}:{owner}"
            if released_at is None:
                self.unavailable.add(number)
                self.live[number] = key
                self.owner_numbers[key] = number
            else:
                self.owner_numbers.setdefault(key, number)
                if now - released_at < reuse_days * DAY:
                    self.unavailable.add(number)

    def own_number(self, kind: str, graph_id: str) -> str | None:
        """The number this owner held before (allocated before a crash, or before a
        deletion), if nobody else has it now; claimed for it."""
        key = f"{kind}:{graph_id}"
        number = self.owner_numbers.get(key)
        if number is None or number in self.pbx_numbers or self.live.get(number, key) != key:
            return None
        self.unavailable.add(number)
        return number

    def live_number(self, kind: str, graph_id: str) -> str | None:
        number = self.owner_numbers.get(f"{kind}:{graph_id}")
        return number if number is not None and self.live.get(number) == f"{kind}:{graph_id}" else None

    def allocator(self, start: str, last: str | None) -> NumberAllocator:
        return NumberAllocator(start, last, self.unavailable)


class NumberAllocator:
    """Counts up from ``start``, skipping the pool's unavailable numbers (shared, not copied)."""

    def __init__(self, start: str, last: str | None, unavailable: set[str]) -> None:
        self._next = int(start)
        self._last = min(int(last), MAX_EXTENSION) if last else MAX_EXTENSION
        self._unavailable = unavailable
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
        """Reserve a specific number so take() skips it."""
        self._unavailable.add(number)
