"""The edge to the identity platform: every call bounded in time, every token
answer checked before msal or anything of ours reads it.

msal runs in a thread over the ``requests`` session it is given. Each HTTP
request gets the configured timeout (msal passes none itself), and the whole
call is also bounded with ``asyncio.timeout``, because a read timeout does not
bound an answer that trickles in.

Entra's token endpoint answers an error as JSON with ``error``,
``error_description``, ``error_codes``, ``timestamp``, ``trace_id`` and
``correlation_id`` ("Microsoft identity platform and OAuth 2.0 authorization
code flow", error response). The description is free text that may quote the
request (client secret, refresh token, code verifier, assertion), so it is
replaced by our own words around the AADSTS code before msal sees it: msal
logs it at debug level, and we would store it as a reason.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import requests

from daemon.errors import IdentityPlatformPayloadError, IdentityPlatformUnavailable

T = TypeVar("T")

_IDENTIFIER = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_NUMBER_FIELDS = ("expires_in", "ext_expires_in", "refresh_in")
_TEXT_FIELDS = ("token_type", "scope", "refresh_token", "id_token", "client_info", "foci")


class _Answer:
    """What msal reads of an HTTP answer (``msal.oauth2cli.http.Response``)."""

    def __init__(self, status_code: int, text: str, headers: Mapping[str, str]) -> None:
        self.status_code = status_code
        self.text = text
        self.headers = dict(headers)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise requests.HTTPError(f"HTTP {self.status_code}")


class IdentityHttpClient:
    """The ``http_client`` of every msal app: one per trusted CA file, shared by
    the tenants' apps (a daemon of 500 tenants keeps a few TLS connection
    pools, not 500). msal's calls run in threads; the session's connection pool
    is thread-safe and it keeps no cookies that matter here."""

    def __init__(self, session: requests.Session, timeout_seconds: Callable[[], float]) -> None:
        self.session = session
        self.timeout_seconds = timeout_seconds  # read per request: a reload may change it

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        """Discovery (the authority's metadata): msal reads its answer itself."""
        kwargs.setdefault("timeout", self.timeout_seconds())
        response = self.session.get(url, **kwargs)
        _raise_if_unavailable(response.status_code)
        return response

    def post(self, url: str, **kwargs: Any) -> _Answer:
        """msal posts only to the token endpoint in the grants this daemon uses."""
        kwargs.setdefault("timeout", self.timeout_seconds())
        response = self.session.post(url, **kwargs)
        _raise_if_unavailable(response.status_code)
        return _Answer(response.status_code, checked_token_answer(response.status_code, response.text), response.headers)

    def close(self) -> None:
        self.session.close()


def _raise_if_unavailable(status: int) -> None:
    """A 5xx or 429 as a requests error, so that msal still falls back to a cached token it may use."""
    if status >= 500 or status == 429:
        raise requests.HTTPError(f"HTTP {status}")


def checked_token_answer(status: int, text: str) -> str:
    """The answer as msal may read it: a token of the documented shape, or an
    error reduced to its codes; IdentityPlatformPayloadError otherwise."""
    try:
        body = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise IdentityPlatformPayloadError(
            f"the token endpoint answered HTTP {status} with something that is not JSON",
            hint="check authority_url and any proxy in front of the identity platform; the next attempt retries",
        ) from err
    if not isinstance(body, dict):
        raise IdentityPlatformPayloadError(f"the token endpoint answered HTTP {status} with JSON that is not an object")
    if "error" in body:
        return json.dumps(_error_codes_only(body))
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise IdentityPlatformPayloadError(
            f"the token endpoint answered HTTP {status} without an access token (access_token is not a non-empty string)"
        )
    for name in _NUMBER_FIELDS:
        if name in body and not _is_number(body[name]):
            raise IdentityPlatformPayloadError(f"the token endpoint answered with {name} that is not a number")
    for name in _TEXT_FIELDS:
        if name in body and not isinstance(body[name], str):
            raise IdentityPlatformPayloadError(f"the token endpoint answered with {name} that is not text")
    return text


def _error_codes_only(body: dict[str, Any]) -> dict[str, Any]:
    """Entra's error with its codes and our own words; never its description."""
    error = body["error"] if isinstance(body["error"], str) and _IDENTIFIER.fullmatch(body["error"]) else "unknown_error"
    codes = [c for c in body.get("error_codes", []) if isinstance(c, int) and not isinstance(c, bool)] \
        if isinstance(body.get("error_codes"), list) else []
    if not codes:  # older answers carry the code only in the description's first word
        match = re.match(r"\s*AADSTS(\d{1,9})\b", str(body.get("error_description") or ""))
        codes = [int(match.group(1))] if match else []
    prefix = f"AADSTS{codes[0]}: " if codes else ""
    reduced: dict[str, Any] = {
        "error": error,
        "error_description": f"{prefix}the token endpoint refused the request ({error}).",
        "error_codes": codes,
    }
    for name in ("suberror", "trace_id", "correlation_id"):
        value = body.get(name)
        if isinstance(value, str) and _IDENTIFIER.fullmatch(value):
            reduced[name] = value
    return reduced


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


async def bounded(seconds: float, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call`` (an msal call) in a thread, ended within ``seconds``; a network
    failure or no answer in time becomes IdentityPlatformUnavailable."""
    try:
        async with asyncio.timeout(seconds):
            return await asyncio.to_thread(call, *args, **kwargs)
    except TimeoutError as err:
        raise _no_answer(seconds) from err
    except requests.Timeout as err:
        raise _no_answer(seconds) from err
    except requests.HTTPError as err:
        raise IdentityPlatformUnavailable(f"the identity platform answered {err}", hint="the next attempt retries") from err
    except requests.RequestException as err:
        raise IdentityPlatformUnavailable(
            f"the identity platform could not be reached ({type(err).__name__})", hint="the next attempt retries"
        ) from err


def _no_answer(seconds: float) -> IdentityPlatformUnavailable:
    return IdentityPlatformUnavailable(
        f"the identity platform did not answer within {seconds:g} s",
        hint="the next attempt retries; [runs] identity_timeout_seconds sets the bound",
    )
