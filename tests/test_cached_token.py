"""The application token read from the stored MSAL cache without MSAL (daemon.auth.cached):
only a token MSAL itself would hand out, else None and MSAL is asked."""

from __future__ import annotations

import json
from typing import Any

import msal

from auth_fixtures import AuthEnv
from daemon.auth.cached import application_token, cached_secrets, parse_cache
from daemon.auth.tokens import Tokens

APP = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
DIRECTORY = "72f988bf-86f1-41af-91ab-2d7cd011db47"
AUTHORITY = f"https://login.microsoftonline.com/{DIRECTORY}"
SCOPES = ["https://graph.microsoft.com/.default"]
NOW = 1_800_000_000


def msal_cache(**response: Any) -> dict[str, Any]:
    """A cache as MSAL writes it after a client-credentials grant at NOW."""
    cache = msal.SerializableTokenCache()
    cache.add({"client_id": APP, "scope": SCOPES, "environment": "login.microsoftonline.com",
               "token_endpoint": f"{AUTHORITY}/oauth2/v2.0/token", "grant_type": "client_credentials",
               "response": {"access_token": "at-1", "token_type": "Bearer", "expires_in": 3600, **response}}, now=NOW)
    return parse_cache(cache.serialize())


def test_a_valid_token_of_this_app_authority_and_scope_is_read() -> None:
    assert application_token(msal_cache(), APP, AUTHORITY, SCOPES, NOW + 60) == "at-1"


def test_msal_rules_decide_when_msal_must_be_asked() -> None:
    cache = msal_cache()
    assert application_token(cache, APP, AUTHORITY, SCOPES, NOW + 3600 - 299) is None  # under 5 minutes left
    assert application_token(cache, APP, AUTHORITY, SCOPES, NOW + 3600 - 300) == "at-1"
    assert application_token(cache, "another-app", AUTHORITY, SCOPES, NOW) is None
    assert application_token(cache, APP, "https://login.microsoftonline.us/" + DIRECTORY, SCOPES, NOW) is None
    assert application_token(cache, APP, AUTHORITY.replace(DIRECTORY, "another-directory"), SCOPES, NOW) is None
    assert application_token(cache, APP, AUTHORITY, ["https://graph.microsoft.us/.default"], NOW) is None
    aging = msal_cache(refresh_in=1800)  # MSAL refreshes proactively once refresh_on has passed
    assert application_token(aging, APP, AUTHORITY, SCOPES, NOW + 1800) == "at-1"
    assert application_token(aging, APP, AUTHORITY, SCOPES, NOW + 1801) is None


def test_a_users_or_key_bound_token_and_an_unreadable_cache_are_left_to_msal() -> None:
    for field, value in (("home_account_id", "uid.utid"), ("key_id", "k1"), ("ext_cache_key", "p")):
        cache = msal_cache()
        for entry in cache["AccessToken"].values():
            entry[field] = value
        assert application_token(cache, APP, AUTHORITY, SCOPES, NOW) is None, field
    assert application_token(parse_cache("not json"), APP, AUTHORITY, SCOPES, NOW) is None
    assert application_token(parse_cache("[]"), APP, AUTHORITY, SCOPES, NOW) is None


def test_every_token_in_the_cache_is_listed_for_redaction() -> None:
    cache = {"AccessToken": {"a": {"secret": "at"}}, "RefreshToken": {"r": {"secret": "rt"}},
             "IdToken": {"i": {"secret": "it"}}, "Account": {"x": {"secret": "not-a-token-kind"}}}
    assert sorted(cached_secrets(cache)) == ["at", "it", "rt"]


async def test_a_new_process_uses_the_stored_token_without_building_an_msal_app(auth_env: AuthEnv) -> None:
    assert auth_env.service.auth is not None
    first = auth_env.service.auth.tokens
    token = await first.access_token("fabrikam")  # through MSAL: a client-credentials grant, cache stored
    requests_made = len(auth_env.idp.token_requests)
    stored = await auth_env.service.store.load_token_cache("fabrikam")
    assert stored is not None and token in json.dumps(parse_cache(first.sealer.open(stored).decode()))

    fresh = Tokens(first.config, first.store, first.sealer, first.states)  # as the next sync --once process
    assert await fresh.access_token("fabrikam") == token
    assert fresh._apps == {} and len(auth_env.idp.token_requests) == requests_made
    reads = 0
    load = first.store.load_token_cache

    async def counted(name: str) -> bytes | None:
        nonlocal reads
        reads += 1
        return await load(name)

    fresh.store.load_token_cache = counted  # type: ignore[method-assign]
    assert [await fresh.access_token("fabrikam") for _ in range(3)] == [token] * 3
    assert reads == 0  # one read per process, not one per Graph request
    fresh.forget("fabrikam")  # another daemon of a shared state wrote the tokens: read them again
    assert await fresh.access_token("fabrikam") == token and reads == 1

    refreshed = await fresh.access_token("fabrikam", force_refresh=True)  # Graph refused it: MSAL is asked
    assert "fabrikam" in fresh._apps and len(auth_env.idp.token_requests) == requests_made + 1
    assert refreshed != token and refreshed in auth_env.idp.issued_access_tokens
