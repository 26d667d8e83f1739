"""The one error hierarchy of m365sync.

Every boundary (config file, state database, Graph, the PBX, the HTTP server)
translates what it meets into one of these, with ``raise ... from err``, so the
CLI can print a one-line message and a hint instead of a traceback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from daemon.redact import redact_text


class M365SyncError(Exception):
    """Base of every error the operator may see; ``hint`` says what to do next.
    Its words may quote an upstream, so they are redacted when it is made and
    again when it is shown (a secret may be learnt in between).

    ``upstream`` is what the other side said in its own words (Graph's
    ``message``): part of the text the CLI prints and the log shows, but not
    of :attr:`reason`, the codes and our words that run records, object
    errors, the API and pages keep."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None, upstream: str | None = None) -> None:
        message = redact_text(message)
        super().__init__(message)
        self.message = message
        self.hint = None if hint is None else redact_text(hint)
        self.upstream = None if upstream is None else redact_text(upstream)

    def __str__(self) -> str:
        said = self.message if self.upstream is None else f"{self.message}: {self.upstream}"
        return redact_text(said if self.hint is None else f"{said} ({self.hint})")

    @property
    def reason(self) -> str:
        """The error as it is stored and shown: our words and the upstream's codes only."""
        return redact_text(self.message if self.hint is None else f"{self.message} ({self.hint})")


def reason_of(error: BaseException | str | None) -> str:
    """What to store of any error: a typed one's :attr:`~M365SyncError.reason`, else its text."""
    if isinstance(error, M365SyncError):
        return error.reason
    return redact_text(str(error))


def error_code(error: BaseException) -> str:
    """A short name for an error in a log line: Graph's code, else an HTTP status, else its type."""
    for attribute in ("code", "status"):
        value = getattr(error, attribute, None)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            return redact_text(str(value))[:64]
    return type(error).__name__


def log_fields(error: BaseException) -> dict[str, str]:
    """An error as one log line's fields, for loops that must go on (no traceback): its code and,
    for a typed one, its reason (our words and codes); an untyped one's text may quote any input."""
    reason = error.reason if isinstance(error, M365SyncError) else "unexpected error"
    return {"error": reason.splitlines()[0][:300] if reason else "", "code": error_code(error)}


@dataclass(frozen=True)
class ConfigProblem:
    """One problem found in the configuration, located by a dotted field path."""

    path: str
    message: str
    is_warning: bool = False

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(M365SyncError):
    """The configuration file cannot be used; ``problems`` lists every mistake."""

    exit_code = 2

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        lines = "\n".join(str(p) for p in problems)
        super().__init__(f"invalid configuration:\n{lines}")


class StateError(M365SyncError):
    """The state database cannot be opened or used."""


class LeaseLost(M365SyncError):
    """This daemon no longer holds the tenant (shared state): it stops writing, another daemon goes on."""


class NoLeaseHolder(M365SyncError):
    """A request for a tenant that no daemon of a shared state holds right now (this
    one may stand back after its lease session was cut); ``retry_after`` in seconds."""

    def __init__(self, tenant: str, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(f"no daemon holds tenant {tenant}'s lease right now; try again in {self.retry_after} s")


class SchemaTooNew(StateError):
    """The state database was written by a newer m365sync than this one."""


class AuthorizationRequired(M365SyncError):
    """No usable token: the tenant must be (re-)authorized by an admin."""


class AuthorityNotFound(M365SyncError):
    """The identity platform does not know the configured directory (wrong
    ``directory_id`` or ``national_cloud``): a configuration fix, not a sign-in."""


# --- the identity platform (Entra's token endpoint) ---


class IdentityPlatformError(M365SyncError):
    """A token request failed without an answer we can use. ``code`` is the
    platform's error code (``invalid_client``, ``AADSTS7000215``), never its
    description: a description may quote the request, secrets included."""

    def __init__(self, message: str, *, code: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class IdentityPlatformUnavailable(IdentityPlatformError):
    """No answer within the configured time, no connection, a 5xx or a 429: the next attempt retries."""


class IdentityPlatformPayloadError(IdentityPlatformError):
    """The token endpoint answered with something that is not the documented shape."""


# --- the sync ---


class RangeExhausted(M365SyncError):
    """No free extension number is left in the configured range: that one user or
    group is recorded as a failure, the run goes on."""


# --- Microsoft Graph ---


class GraphError(M365SyncError):
    """A Graph request failed for good; ``status`` and ``code`` are Graph's."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        hint: str | None = None,
        upstream: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, upstream=upstream)
        self.status = status
        self.code = code


class DeltaExpired(GraphError):
    """The delta state is gone (410, syncStateNotFound, resyncRequired): run a full round."""


class AccessDenied(GraphError):
    """403: the token may not read this resource (e.g. another user's mailbox)."""


class GraphNotFound(GraphError):
    """404: the object (or photo, or mailbox) does not exist."""


class GraphThrottled(GraphError):
    """Still 429 after the allowed attempts."""


class GraphUnavailable(GraphError):
    """5xx, timeouts or connection failures after the allowed attempts."""


class GraphRequestError(GraphError):
    """Any other 4xx: the request itself is wrong."""


class GraphPayloadError(GraphError):
    """Graph answered with something that is not the documented shape."""


class GraphLinkRefused(GraphPayloadError):
    """A link from Graph (``@odata.nextLink``, ``@odata.deltaLink``) points away from
    the configured cloud's Graph host, scheme and port: not followed, no token sent."""


class GraphPagingRunaway(GraphPayloadError):
    """A paged answer repeated a link, or ran to more pages than the tenant's size
    explains: the round stops unfinished, and nothing it read counts as gone."""


# --- the PBX (SCIM) ---


class PbxError(M365SyncError):
    """A SCIM request to the PBX failed; ``status`` and ``detail`` are the PBX's."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        detail: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.detail = None if detail is None else redact_text(detail)


class PbxConflict(PbxError):
    """The PBX already has an object holding a unique value we need, and it is
    not ours to adopt (another externalId), or the value is an extension number."""


class ExtensionTaken(PbxConflict):
    """The extension number sent is held by another PBX object (set there by hand, unknown to the
    state): the run reads the PBX's numbers and numbers the object again, once."""


class PbxRequestFailed(PbxError):
    """The PBX refused this one object (a 4xx other than 409/412/429): recorded, run goes on."""


class PbxUnavailable(PbxError):
    """5xx, 429, timeouts or connection failures after the allowed attempts."""


class PbxProtocolError(PbxError):
    """The PBX answered with something that is not valid SCIM (a number that is
    not a number, JSON nested too deeply): the run stops rather than guess."""


class PbxListingInconsistent(PbxProtocolError):
    """A paged list of the PBX came back inconsistent (a page served again, an id
    twice, fewer or more objects than its ``totalResults``): the listing fails
    rather than be taken as complete, so no number in use is missed."""


class PbxLinkRefused(PbxProtocolError):
    """The PBX named a resource location (``/Bulk`` ``location``, an absolute URL)
    outside the configured ``pbx.scim_url``'s origin: not used, no token sent."""


class PbxAuthFailed(PbxError):
    """401/403 from the PBX: the SCIM token in ``pbx.token_file`` is wrong."""
