"""Teams presence: ``POST /communications/getPresencesByUserId``
(https://learn.microsoft.com/en-us/graph/api/cloudcommunications-getpresencesbyuserid).

- The body is ``{"ids": [...]}``; "Maximum of 650 user IDs are supported per
  API request" (the page's note): more answer 400.
- "The maximum request rate of this API is 1500 API requests in a 30 second
  period, per application per tenant" (same note): beyond it, 429 with a
  ``Retry-After`` (https://learn.microsoft.com/en-us/graph/throttling).
- The answer is ``{"value": [{"id", "availability", "activity"}]}``, one per
  user (the page's response example); the values are the presence resource's
  (https://learn.microsoft.com/en-us/graph/api/resources/presence): a user who
  never set any is ``PresenceUnknown`` / ``PresenceUnknown``. An id that is no
  user of the tenant gets no item (a simulator choice: the page is silent).

A test or bench changes a user's presence on demand with
:meth:`PresenceApi.set` (``SimTenant.presences``).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from sim.answers import SimRequest, SimResponse, graph_error
from sim.store import SimTenant

MAX_IDS = 650
RATE_LIMIT = 1500  # requests
RATE_WINDOW = 30.0  # seconds
UNKNOWN = ("PresenceUnknown", "PresenceUnknown")


class PresenceApi:
    def __init__(self, tenant: SimTenant) -> None:
        self.tenant = tenant
        self.answered: deque[float] = deque()  # when each request of the last 30 s was answered
        self.throttled = 0

    def set(self, user_id: str, availability: str, activity: str) -> None:
        """The user's presence changes in Teams."""
        self.tenant.presences[user_id] = (availability, activity)

    def get_presences(self, request: SimRequest) -> SimResponse:
        now = self.tenant.clock.time()
        while self.answered and self.answered[0] <= now - RATE_WINDOW:
            self.answered.popleft()
        if len(self.answered) >= RATE_LIMIT:
            self.throttled += 1
            wait = max(1, int(self.answered[0] + RATE_WINDOW - now) + 1)
            return graph_error(429, "TooManyRequests", "Too many requests.", {"Retry-After": str(wait)})
        body: Any = request.body
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return graph_error(400, "BadRequest", "The request body needs an ids collection of strings.")
        if len(ids) > MAX_IDS:
            return graph_error(400, "BadRequest", f"At most {MAX_IDS} ids are supported per request.")
        self.answered.append(now)
        value = []
        for user_id in ids:
            record = self.tenant.users.live(user_id)  # object ids only, not userPrincipalNames
            if record is None:
                continue
            availability, activity = self.tenant.presences.get(record.id, UNKNOWN)
            value.append({"id": record.id, "availability": availability, "activity": activity})
        return SimResponse(200, {"value": value})
