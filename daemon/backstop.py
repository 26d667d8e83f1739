"""The mailbox backstop's slices: which mailboxes each tick reads, so every
mailbox is read once per interval (``personal_contacts.poll_seconds``) and
the Graph requests a minute stay flat instead of one burst per interval.

A **round** is ``slices`` ticks. The mailboxes are taken in the order of
their ids (Graph ids: random GUIDs, so no tenant's naming bunches them), and
each tick reads the next ones after the last id this round read (a cursor),
as many as spread what is left of the round evenly over its ticks left:
``ceil(left / ticks left)``. Hence:

- each mailbox is read exactly once a round, and no tick reads more than
  ``ceil(N / slices)`` of N mailboxes (while the set does not grow);
- the cursor is an id, not a position: a mailbox added or removed moves no
  other one to another tick. One added after the cursor is read this round,
  one added before it at the same point of the next round, so within one
  interval either way;
- a tick the poll skipped (a run that overran) shrinks the ticks left, so
  the next ticks catch up and the round still ends on time; the last tick
  of a round reads whatever is left of it.

A round starts when the poll starts (at start-up, after the start-up run
read every mailbox, or after a reload that changed the interval).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

BACKSTOP_TICK_SECONDS = 60.0  # one slice a minute, as issue 25 counts the backstop's requests


def backstop_slices(interval: float, tick: float = BACKSTOP_TICK_SECONDS) -> int:
    """How many ticks of ``tick`` seconds or more fit in a round of ``interval`` seconds (at least one),
    so a poll every ``tick`` seconds ends its round within the interval."""
    return max(1, int(interval // tick))


class Rounds:
    """Goes round a changing set of mailboxes once per ``interval`` seconds, in ticks of about
    ``tick`` seconds (see the module docstring)."""

    def __init__(self, interval: float, tick: float = BACKSTOP_TICK_SECONDS) -> None:
        self.slices = backstop_slices(interval, tick)
        self.tick = interval / self.slices  # the poll's interval: the round is exactly ``interval``
        self.restart()

    def restart(self) -> None:
        """A new round from the first id at the next tick (every mailbox was just read otherwise)."""
        self.position = 0  # the tick of the round the next call is
        self.cursor: str | None = None  # the last id read this round
        self.last: float | None = None  # when the last tick was (the clock's monotonic seconds)

    def next_slice(self, members: Iterable[str], now: float) -> list[str]:
        """The mailboxes of ``members`` the tick at ``now`` reads."""
        ticks = 1 if self.last is None else max(1, round((now - self.last) / self.tick))  # more: ticks skipped
        self.last = now
        position = min(self.position + ticks - 1, self.slices - 1)
        left = sorted(m for m in set(members) if self.cursor is None or m > self.cursor)
        chosen = left[:math.ceil(len(left) / (self.slices - position))]
        if chosen:
            self.cursor = chosen[-1]
        if position == self.slices - 1:  # the round is over: the next tick starts another
            self.position, self.cursor = 0, None
        else:
            self.position = position + 1
        return chosen
