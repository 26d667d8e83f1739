"""Authorization of each tenant: the browser flow and the token lifecycle.

- ``issue_start_link``: the one-time link ``m365sync authorize`` prints.
- ``begin``: the start page; a fresh signed state, nonce and PKCE verifier
  per attempt, kept server-side in the state database (sealed when a key is
  configured).
- ``complete``: the callback; the state must be genuine, unexpired, unused
  and of this tenant, the code is redeemed with the redirect URI the attempt
  used, and the signed-in directory must be the configured one.
- ``access_token``: MSAL silent acquisition (refresh ahead of expiry) under a
  per-tenant lock, off the event loop; a dead grant moves the tenant to
  ``reauthorization_required`` with one log line per change of state.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import msal
import requests

from daemon.auth import pages, signing
from daemon.auth.credential import client_credential, initiate_flow
from daemon.auth.explain import DEAD_GRANT_CODES, AuthContext, AuthProblem, aadsts_code, admin_consent_url, explain
from daemon.auth.scopes import application_scopes, delegated_scopes
from daemon.config import CALLBACK_PATH, Config, ServerConfig, TenantConfig
from daemon.errors import AuthorityNotFound, AuthorizationRequired, GraphUnavailable
from daemon.graph.clouds import authority_url
from daemon.logging import get_logger
from daemon.metrics import Metrics
from daemon.tls import msal_http_client
from state.sealing import Sealer
from state.store import Store

log = get_logger(__name__)

LINK_LIFETIME_SECONDS = 15 * 60
FLOW_LIFETIME_SECONDS = 15 * 60
SIGNING_KEY_NAME = "auth-signing-key"
START_PATH = "/api/auth/start/ms365"

AUTHORIZED = "authorized"
AUTHORIZATION_REQUIRED = "authorization_required"
REAUTHORIZATION_REQUIRED = "reauthorization_required"
DISCONNECTED = "disconnected"  # m365sync disconnect: no runs until authorized again
AUTH_STATES = (AUTHORIZED, AUTHORIZATION_REQUIRED, REAUTHORIZATION_REQUIRED, DISCONNECTED)


@dataclass(frozen=True)
class PageResult:
    status: int
    html: str
    authorized_tenant: str | None = None


def redirect_uris(server: ServerConfig) -> list[tuple[str, str]]:
    """The exact redirect URIs to register: the PBX path, and the SBC one if configured."""
    base = server.public_url or f"http://localhost:{server.port}"
    uris = [("PBX", base + CALLBACK_PATH)]
    if server.sbc_public_url:
        uris.append(("SBC", server.sbc_public_url + CALLBACK_PATH))
    return uris


class AuthManager:
    def __init__(
        self,
        config: Config,
        store: Store,
        metrics: Metrics,
        sealer: Sealer | None = None,
        on_authorized: Callable[[str], object] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.sealer = sealer or Sealer()
        self.on_authorized = on_authorized
        self.clock = clock
        self._apps: dict[str, msal.ClientApplication] = {}
        self._caches: dict[str, msal.SerializableTokenCache] = {}
        self._http_clients: dict[str, requests.Session] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # --- URIs and links ---

    def redirect_uris(self) -> list[tuple[str, str]]:
        return redirect_uris(self.config.server)

    def _redirect_uri(self, via: str) -> str:
        uris = dict(self.redirect_uris())
        return uris.get(via.upper(), uris["PBX"])

    async def _key(self) -> bytes:
        return await self.store.secret(SIGNING_KEY_NAME, lambda: secrets.token_bytes(32))

    async def issue_start_link(self, tenant_name: str, via: str = "pbx") -> str:
        """A start-page link that works once, within 15 minutes."""
        tenant = self.config.tenant(tenant_name)
        attempt_id = signing.new_attempt_id()
        await self.store.create_attempt(attempt_id, tenant.name, "link", LINK_LIFETIME_SECONDS)
        token = signing.sign(await self._key(), "link", tenant.name, attempt_id)
        base = self._redirect_uri(via).removesuffix(CALLBACK_PATH)
        return f"{base}{START_PATH}?{urlencode({'tenant': tenant.name, 'via': via.lower(), 'link': token})}"

    # --- the start page ---

    async def begin(self, tenant_name: str, link: str | None, admin: bool, via: str = "pbx") -> PageResult:
        tenant = next((t for t in self.config.tenants if t.name == tenant_name), None)
        if tenant is None:
            return PageResult(404, pages.refused_page("Unknown tenant", "No tenant of that name is configured."))
        if not admin:
            attempt_id = signing.verify(await self._key(), "link", tenant.name, link or "") if link else None
            if attempt_id is None:
                status = 401 if not link else 403
                return PageResult(status, pages.refused_page(
                    "Authorization link required",
                    "Open the link printed by 'm365sync authorize', or the Authorize button of the PBX portal.",
                ))
            if await self.store.consume_attempt(attempt_id, "link") is None:
                return PageResult(403, pages.refused_page(
                    "Link expired or already used",
                    "Each authorization link works once within 15 minutes. Run 'm365sync authorize' again.",
                ))
        redirect_uri = self._redirect_uri(via)
        flow_id = signing.new_attempt_id()
        state = f"{tenant.name}.{signing.sign(await self._key(), 'flow', tenant.name, flow_id)}"
        context = AuthContext(tenant, tuple(uri for _, uri in self.redirect_uris()), redirect_uri)
        try:
            if tenant.auth_mode == "delegated":
                app = await self._app(tenant)
                flow = await asyncio.to_thread(initiate_flow, app, delegated_scopes(tenant), redirect_uri, state)
                continue_url = str(flow["auth_uri"])
            else:
                flow = {"mode": "application", "redirect_uri": redirect_uri}
                continue_url = f"{admin_consent_url(tenant, redirect_uri)}&{urlencode({'state': state})}"
        except ValueError as err:  # MSAL could not read the authority's metadata: unknown tenant or cloud
            problem = explain("invalid_tenant", str(err), context)
            self._log_problem(tenant.name, problem)
            return PageResult(400, pages.error_page(problem))
        except requests.RequestException as err:
            problem = explain("invalid_tenant", f"the identity platform at {authority_url(tenant)} did not answer ({type(err).__name__})", context)
            self._log_problem(tenant.name, problem)
            return PageResult(502, pages.error_page(problem))
        sealed = self.sealer.seal(json.dumps({"flow": flow, "redirect_uri": redirect_uri}).encode())
        await self.store.create_attempt(flow_id, tenant.name, "flow", FLOW_LIFETIME_SECONDS, sealed)
        log.info("authorization started", tenant=tenant.name, redirect_uri=redirect_uri)
        return PageResult(200, pages.start_page(tenant.name, self.redirect_uris(), continue_url, tenant.auth_mode))

    # --- the callback ---

    async def complete(self, query: dict[str, str]) -> PageResult:
        state = query.get("state", "")
        tenant_name, _, token = state.partition(".")
        tenant = next((t for t in self.config.tenants if t.name == tenant_name), None)
        refused = PageResult(400, pages.refused_page(
            "Authorization not accepted",
            "This sign-in response does not belong to a current authorization attempt (unknown, expired, "
            "already used, or for another tenant). Nothing was stored; start the authorization again.",
        ))
        if tenant is None:
            return refused
        attempt_id = signing.verify(await self._key(), "flow", tenant.name, token)
        if attempt_id is None:
            log.warning("refused a callback with a forged or altered state", tenant=tenant.name)
            return refused
        attempt = await self.store.consume_attempt(attempt_id, "flow")
        if attempt is None or attempt.tenant != tenant.name or attempt.data is None:
            log.warning("refused a callback with an expired or already used state", tenant=tenant.name)
            return refused
        saved = json.loads(self.sealer.open(attempt.data))
        context = AuthContext(tenant, tuple(uri for _, uri in self.redirect_uris()), saved["redirect_uri"])
        if "error" in query:
            problem = explain(query.get("error"), query.get("error_description"), context)
            self._log_problem(tenant.name, problem)
            return PageResult(400, pages.error_page(problem))
        if tenant.auth_mode == "application":
            return await self._complete_application(tenant, query, context)
        return await self._complete_delegated(tenant, saved["flow"], query, context)

    async def _complete_delegated(
        self, tenant: TenantConfig, flow: dict[str, Any], query: dict[str, str], context: AuthContext
    ) -> PageResult:
        app = await self._app(tenant)
        try:
            result = await asyncio.to_thread(app.acquire_token_by_auth_code_flow, flow, query)
        except ValueError:
            return PageResult(400, pages.refused_page("Authorization not accepted", "The sign-in response did not match its attempt."))
        except requests.RequestException as err:
            problem = explain(None, f"the identity platform did not answer ({type(err).__name__})", context)
            return PageResult(502, pages.error_page(problem))
        if "error" in result:
            problem = explain(result.get("error"), result.get("error_description"), context)
            self._log_problem(tenant.name, problem)
            return PageResult(400, pages.error_page(problem))
        claims = result.get("id_token_claims") or {}
        signed_in_tenant = str(claims.get("tid", ""))
        if signed_in_tenant.lower() != tenant.directory_id.lower():
            await self._forget_tokens(tenant)
            message = (f"The account signed in to directory {signed_in_tenant}, but tenant {tenant.name} is "
                       f"configured for directory {tenant.directory_id}. Nothing was stored.")
            log.error("authorization refused: signed in to another directory", tenant=tenant.name, directory=signed_in_tenant)
            return PageResult(400, pages.refused_page("Wrong directory", message))
        owner = str(claims.get("preferred_username") or claims.get("name") or "unknown account")
        await self._keep_only_account(app, str(claims.get("oid", "")))
        await self._persist_cache(tenant)
        await self._set_state(tenant.name, AUTHORIZED, owner=owner, reason=None)
        if self.on_authorized is not None:
            self.on_authorized(tenant.name)
        return PageResult(200, pages.success_page(tenant.name, owner, tenant.directory_id), tenant.name)

    async def _complete_application(self, tenant: TenantConfig, query: dict[str, str], context: AuthContext) -> PageResult:
        if query.get("admin_consent", "").lower() != "true":
            problem = explain("access_denied", None, context)
            return PageResult(400, pages.error_page(problem))
        try:
            await self.access_token(tenant.name)
        except AuthorizationRequired as err:
            return PageResult(400, pages.refused_page("Consent recorded, but no token", str(err)))
        owner = f"application {tenant.application_id}"
        await self._set_state(tenant.name, AUTHORIZED, owner=owner, reason=None)
        if self.on_authorized is not None:
            self.on_authorized(tenant.name)
        return PageResult(200, pages.success_page(tenant.name, owner, tenant.directory_id), tenant.name)

    def forget_tokens(self, tenant_name: str) -> None:
        """Read the token cache from the state again next time (another daemon of a shared state wrote it)."""
        self._caches.pop(tenant_name, None)
        self._apps.pop(tenant_name, None)

    def forget_app(self, tenant_name: str) -> None:
        """Build the tenant's MSAL app again next time (its settings changed)."""
        self._apps.pop(tenant_name, None)

    # --- tokens ---

    def token_provider(self, tenant_name: str) -> Callable[..., Any]:
        """A Graph client's token provider for this tenant."""

        async def provide(*, force_refresh: bool = False) -> str:
            return await self.access_token(tenant_name, force_refresh=force_refresh)

        return provide

    async def access_token(self, tenant_name: str, *, force_refresh: bool = False) -> str:
        """A valid Graph access token, refreshed ahead of expiry; AuthorizationRequired otherwise."""
        tenant = self.config.tenant(tenant_name)
        lock = self._locks.setdefault(tenant.name, asyncio.Lock())
        async with lock:
            try:
                app = await self._app(tenant)
            except ValueError as err:  # MSAL could not read the authority: unknown directory or wrong cloud
                problem = explain("invalid_tenant", str(err), AuthContext(tenant, tuple(u for _, u in self.redirect_uris())))
                await self._set_state(tenant.name, REAUTHORIZATION_REQUIRED, reason=f"{problem.code}: {problem.explanation}")
                raise AuthorityNotFound(f"{problem.title}: {problem.explanation}", hint=problem.actions[0]) from err
            except requests.RequestException as err:
                raise GraphUnavailable(
                    f"the identity platform at {authority_url(tenant)} did not answer: {type(err).__name__}",
                    hint="the next attempt retries",
                ) from err
            try:
                if tenant.auth_mode == "application":
                    if force_refresh:  # Graph refused the cached token (401): MSAL would hand it out again
                        await asyncio.to_thread(app.remove_tokens_for_client)
                    result = await asyncio.to_thread(app.acquire_token_for_client, application_scopes(tenant))
                else:
                    accounts = await asyncio.to_thread(app.get_accounts)
                    if not accounts:
                        await self._set_state(tenant.name, AUTHORIZATION_REQUIRED, reason="not authorized yet")
                        raise AuthorizationRequired(
                            f"tenant {tenant.name} is not authorized",
                            hint=f"run: m365sync authorize --tenant {tenant.name}",
                        )
                    result = await asyncio.to_thread(
                        app.acquire_token_silent_with_error, delegated_scopes(tenant), accounts[0], force_refresh=force_refresh
                    )
            except requests.RequestException as err:
                raise GraphUnavailable(
                    f"the identity platform at {authority_url(tenant)} did not answer: {type(err).__name__}",
                    hint="the next attempt retries",
                ) from err
            await self._persist_cache(tenant)
            if result and "access_token" in result:
                if tenant.auth_mode == "application":
                    await self._set_state(tenant.name, AUTHORIZED, owner=f"application {tenant.application_id}", reason=None)
                return str(result["access_token"])
            error = (result or {}).get("error")
            description = (result or {}).get("error_description")
            context = AuthContext(tenant, tuple(uri for _, uri in self.redirect_uris()))
            problem = explain(error or "invalid_grant", description or "no usable token in the cache", context)
            code = aadsts_code(description)
            dead = result is None or error == "invalid_grant" or code in DEAD_GRANT_CODES or tenant.auth_mode == "application"
            if dead:
                await self._set_state(tenant.name, REAUTHORIZATION_REQUIRED, reason=f"{problem.code}: {problem.explanation}")
                raise AuthorizationRequired(f"{problem.title}: {problem.explanation}", hint=problem.actions[0])
            raise GraphUnavailable(f"token refresh failed: {problem.code}: {problem.explanation}", hint="the next attempt retries")

    # --- state, caches, apps ---

    async def _set_state(self, tenant: str, state: str, *, owner: str | None = None, reason: str | None) -> None:
        """Record a state; log and expose it once per change, not per attempt."""
        row = await self.store.tenant(tenant)
        previous = row.auth_state if row is not None else None
        if previous == state and (row is None or row.auth_reason == reason):
            return
        await self.store.set_auth_state(tenant, state, owner=owner, reason=reason)
        self.publish_state(tenant, state)
        if state == REAUTHORIZATION_REQUIRED:
            log.error("tenant needs re-authorization; its syncs stop until an admin authorizes again",
                      tenant=tenant, reason=reason, action=f"m365sync authorize --tenant {tenant}")
        elif state == AUTHORIZED:
            log.info("tenant authorized", tenant=tenant, owner=owner)
        else:
            log.warning("tenant is not authorized", tenant=tenant, reason=reason)

    def publish_state(self, tenant: str, state: str) -> None:
        for candidate in AUTH_STATES:
            self.metrics.auth_state.labels(tenant, candidate).set(1 if candidate == state else 0)

    def _log_problem(self, tenant: str, problem: AuthProblem) -> None:
        log.error("authorization failed", tenant=tenant, error_code=problem.code, problem=problem.title,
                  explanation=problem.explanation, action=problem.actions[0])

    async def _cache(self, tenant: TenantConfig) -> msal.SerializableTokenCache:
        cache = self._caches.get(tenant.name)
        if cache is None:
            cache = msal.SerializableTokenCache()
            stored = await self.store.load_token_cache(tenant.name)
            if stored:
                cache.deserialize(self.sealer.open(stored).decode())
            self._caches[tenant.name] = cache
        return cache

    async def _persist_cache(self, tenant: TenantConfig) -> None:
        """Write the MSAL cache back, only when it changed."""
        cache = self._caches.get(tenant.name)
        if cache is not None and cache.has_state_changed:
            await self.store.save_token_cache(tenant.name, self.sealer.seal(cache.serialize().encode()))
            cache.has_state_changed = False

    async def _keep_only_account(self, app: msal.ClientApplication, oid: str) -> None:
        """One integration owner per tenant: a new sign-in replaces the previous owner's tokens."""
        for account in await asyncio.to_thread(app.get_accounts):
            if account.get("local_account_id") != oid:
                await asyncio.to_thread(app.remove_account, account)

    async def _forget_tokens(self, tenant: TenantConfig) -> None:
        self._caches.pop(tenant.name, None)
        self._apps.pop(tenant.name, None)
        await self.store.drop_token_cache(tenant.name)

    def _http_client(self, tenant: TenantConfig) -> requests.Session:
        """One session per trusted CA file, shared by the tenants' MSAL apps: a daemon of 500
        tenants keeps a few TLS connection pools, not 500 (each with its own CA store in memory).
        MSAL calls run in threads; the session's connection pool is thread-safe and it keeps no
        cookies that matter here."""
        key = str(tenant.ca_file) if tenant.ca_file else ""
        if key not in self._http_clients:
            self._http_clients[key] = msal_http_client(tenant.ca_file)
        return self._http_clients[key]

    async def _app(self, tenant: TenantConfig) -> msal.ClientApplication:
        app = self._apps.get(tenant.name)
        if app is not None:
            return app
        options: dict[str, Any] = {
            "authority": authority_url(tenant),
            "token_cache": await self._cache(tenant),
            "http_client": self._http_client(tenant),
        }
        if tenant.authority_url:
            options["instance_discovery"] = False  # a proxy or a test identity provider
        # MSAL reads the authority's metadata while constructing: off the loop too.
        if tenant.auth_mode == "application":
            credential = client_credential(tenant)
            app = await asyncio.to_thread(
                msal.ConfidentialClientApplication, tenant.application_id, client_credential=credential, **options
            )
        else:
            app = await asyncio.to_thread(msal.PublicClientApplication, tenant.application_id, **options)
        self._apps[tenant.name] = app
        return app
