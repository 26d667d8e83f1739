"""User photos: which changed (``mediaEtag`` read in ``$batch``es), and their
bytes, fetched per applied chunk as ``data:`` URIs (for the writes whose
``PhotoRef`` asks for them) and dropped after it, so memory does not grow
with the tenant.

Photo changes are not in the users delta, so metadata has its own cadence:
a user's photo is checked when it was never checked, or when its last check
is older than ``users.photo_check_hours`` scaled by a stable per-user factor
between 0.5 and 1; so checks spread over the day's runs instead of every
run asking for every photo. A new user's photo is checked on its first run;
``sync --once --photos`` and Sync now with ``photos`` check them all."""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from daemon.config import TenantConfig
from daemon.graph.batch import BatchExecutor, BatchRequest
from daemon.graph.client import GraphClient
from daemon.pbx.mapping import photo_data_uri
from daemon.retry import header

MAX_PHOTO_BYTES = 256 * 1024


def _interval(user_id: str, hours: int) -> float:
    """Seconds between two checks of this user's photo: ``hours`` scaled by a stable factor in [0.5, 1]."""
    return hours * 3600 * (0.5 + 0.5 * (zlib.crc32(user_id.encode()) / 0xFFFFFFFF))


def photo_check_due(user_id: str, checked_at: float | None, now: float, hours: int) -> bool:
    """Whether this run checks this user's photo (see the module docstring)."""
    if checked_at is None or hours == 0:
        return True
    return now - checked_at >= _interval(user_id, hours)


def photo_due_at(user_id: str, checked_at: float, hours: int) -> float:
    """When the next check of a photo checked at ``checked_at`` is due (stored, so due checks are an index search)."""
    return checked_at + _interval(user_id, hours)


async def photo_versions(graph: GraphClient, user_ids: Iterable[str]) -> dict[str, str | None]:
    """mediaEtag of each user's photo (None: no photo); users whose check failed are left out."""
    requests = (BatchRequest(user_id, f"/users/{user_id}/photo", mailbox=user_id) for user_id in user_ids)
    photos: dict[str, str | None] = {}
    async for result in BatchExecutor(graph).run(requests):
        user_id = result.request.key
        if result.ok and isinstance(result.body, dict):
            photos[user_id] = str(result.body.get("@odata.mediaEtag") or "") or None
        elif result.status == 404:
            photos[user_id] = None
        # other failures: unknown this run, the planner keeps the previous state
    return photos


@dataclass
class PhotoBytes:
    """The photos a chunk sends, fetched in ``$batch``es at the configured size (the applier's ``PhotoSource``)."""

    tenant: TenantConfig
    graph: GraphClient

    async def data_uris(self, user_ids: list[str]) -> dict[str, str]:
        uris: dict[str, str] = {}
        smaller = await self._download(user_ids, f"/photos/{self.tenant.users.photo_size}/$value", uris)
        # A size larger than the uploaded photo answers 404: the photo as uploaded is the largest there is
        # (https://learn.microsoft.com/en-us/graph/api/profilephoto-get).
        await self._download(smaller, "/photo/$value", uris)
        return uris

    async def _download(self, user_ids: list[str], tail: str, uris: dict[str, str]) -> list[str]:
        """Each user's photo bytes as a data: URI into ``uris``; returns the users that answered 404."""
        missing: list[str] = []
        requests = (BatchRequest(i, f"/users/{i}{tail}", mailbox=i) for i in user_ids)
        async for result in BatchExecutor(self.graph).run(requests):
            body = result.body
            if result.ok and isinstance(body, bytes) and 0 < len(body) <= MAX_PHOTO_BYTES:
                content_type = header(result.headers, "content-type") or "image/jpeg"
                uris[result.request.key] = photo_data_uri(body, content_type.split(";")[0] or "image/jpeg")
            elif result.status == 404:
                missing.append(result.request.key)
        return missing
