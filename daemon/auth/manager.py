"""Authorization of each tenant in the browser; the token lifecycle is
:mod:`daemon.auth.tokens`.

- ``issue_start_link``: the one-time link ``m365sync authorize`` prints.
- ``begin``: the start page; a fresh signed state, nonce and PKCE verifier
  per attempt, kept server-side in the state database (sealed when a key is
  configured).
- ``complete``: the callback; the state must be genuine, unexpired, unused
  and of this tenant, the code is redeemed with the redirect URI the attempt
  used, and the signed-in directory must be the configured one.
"""

from __future__ import annotations

import json
import secrets
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from daemon.auth import pages, signing
from daemon.auth.explain import AuthContext, AuthProblem, admin_consent_url, explain, redirect_uris
from daemon.auth.scopes import delegated_scopes
from daemon.auth.states import AUTHORIZED, AuthStates
from daemon.auth.tokens import Tokens
from daemon.config import CALLBACK_PATH, Config, TenantConfig
from daemon.errors import AuthorizationRequired, IdentityPlatformError
from daemon.graph.clouds import authority_url
from daemon.logging import get_logger
from daemon.metrics import Metrics
from state.sealing import Sealer
from state.store import Store

if TYPE_CHECKING:  # the browser flow's msal calls go through Tokens, which imports msal when it builds an app
    import msal

log = get_logger(__name__)

LINK_LIFETIME_SECONDS = 15 * 60
FLOW_LIFETIME_SECONDS = 15 * 60
SIGNING_KEY_NAME = "auth-signing-key"
START_PATH = "/api/auth/start/ms365"


@dataclass(frozen=True)
class PageResult:
    status: int
    html: str
    authorized_tenant: str | None = None


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
        self.states = AuthStates(store, metrics)
        self.tokens = Tokens(lambda: self.config, store, self.sealer, self.states)

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
        tenant = self.config.find_tenant(tenant_name)
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
                app = await self.tokens.app(tenant)
                flow = await self.tokens.call(_initiate_flow, app, delegated_scopes(tenant), redirect_uri, state)
                continue_url = str(flow["auth_uri"])
            else:
                flow = {"mode": "application", "redirect_uri": redirect_uri}
                continue_url = f"{admin_consent_url(tenant, redirect_uri)}&{urlencode({'state': state})}"
        except ValueError as err:  # MSAL could not read the authority's metadata: unknown tenant or cloud
            problem = explain("invalid_tenant", str(err), context)
            self._log_problem(tenant.name, problem)
            return PageResult(400, pages.error_page(problem))
        except IdentityPlatformError as err:
            problem = explain("invalid_tenant", f"the identity platform at {authority_url(tenant)} did not answer ({err.message})", context)
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
        tenant = self.config.find_tenant(tenant_name)
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
        app = await self.tokens.app(tenant)
        try:
            result = await self.tokens.call(app.acquire_token_by_auth_code_flow, flow, query)
        except ValueError:
            return PageResult(400, pages.refused_page("Authorization not accepted", "The sign-in response did not match its attempt."))
        except IdentityPlatformError as err:  # no answer in time, or not the documented shape
            problem = explain(None, err.message, context)
            return PageResult(502, pages.error_page(problem))
        if "error" in result:
            problem = explain(result.get("error"), result.get("error_description"), context)
            self._log_problem(tenant.name, problem)
            return PageResult(400, pages.error_page(problem))
        claims = result.get("id_token_claims") or {}
        signed_in_tenant = str(claims.get("tid", ""))
        if signed_in_tenant.lower() != tenant.directory_id.lower():
            await self.tokens.drop(tenant)
            message = (f"The account signed in to directory {signed_in_tenant}, but tenant {tenant.name} is "
                       f"configured for directory {tenant.directory_id}. Nothing was stored.")
            log.error("authorization refused: signed in to another directory", tenant=tenant.name, directory=signed_in_tenant)
            return PageResult(400, pages.refused_page("Wrong directory", message))
        owner = str(claims.get("preferred_username") or claims.get("name") or "unknown account")
        await self._keep_only_account(app, str(claims.get("oid", "")))
        await self.tokens.persist_cache(tenant)
        await self.store.set_auth_scopes(tenant.name, delegated_scopes(tenant))  # what status compares later
        await self.states.record(tenant.name, AUTHORIZED, owner=owner, reason=None)
        if self.on_authorized is not None:
            self.on_authorized(tenant.name)
        return PageResult(200, pages.success_page(tenant.name, owner, tenant.directory_id), tenant.name)

    async def _complete_application(self, tenant: TenantConfig, query: dict[str, str], context: AuthContext) -> PageResult:
        if query.get("admin_consent", "").lower() != "true":
            problem = explain("access_denied", None, context)
            return PageResult(400, pages.error_page(problem))
        try:
            await self.tokens.access_token(tenant.name)
        except (AuthorizationRequired, IdentityPlatformError) as err:
            return PageResult(400, pages.refused_page("Consent recorded, but no token", str(err)))
        owner = f"application {tenant.application_id}"
        await self.states.record(tenant.name, AUTHORIZED, owner=owner, reason=None)
        if self.on_authorized is not None:
            self.on_authorized(tenant.name)
        return PageResult(200, pages.success_page(tenant.name, owner, tenant.directory_id), tenant.name)

    def forget_tokens(self, tenant_name: str) -> None:
        """Read the token cache from the state again next time (another daemon of a shared state wrote it)."""
        self.tokens.forget(tenant_name)

    def forget_app(self, tenant_name: str) -> None:
        """Build the tenant's MSAL app again next time (its settings changed)."""
        self.tokens.forget_app(tenant_name)

    def publish_state(self, tenant: str, state: str) -> None:
        self.states.publish(tenant, state)

    def _log_problem(self, tenant: str, problem: AuthProblem) -> None:
        log.error("authorization failed", tenant=tenant, error_code=problem.code, problem=problem.title,
                  explanation=problem.explanation, action=problem.actions[0])

    async def _keep_only_account(self, app: msal.ClientApplication, oid: str) -> None:
        """One integration owner per tenant: a new sign-in replaces the previous owner's tokens."""
        for account in await self.tokens.call(app.get_accounts):
            if account.get("local_account_id") != oid:
                await self.tokens.call(app.remove_account, account)


def _initiate_flow(app: msal.ClientApplication, scopes: list[str], redirect_uri: str, state: str) -> dict[str, Any]:
    """MSAL's auth-code flow with PKCE. The callback takes the query response
    mode (the PBX's documented GET callback); MSAL's advice to prefer
    form_post is silenced because the code is single-use, PKCE-bound and
    redeemed at once, and the callback never logs its query."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="response_mode='form_post' is recommended")
        flow: dict[str, Any] = app.initiate_auth_code_flow(scopes, redirect_uri=redirect_uri, state=state)
    return flow
