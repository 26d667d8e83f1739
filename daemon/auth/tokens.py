"""The token lifecycle of every tenant: its MSAL app, its sealed token cache,
and one token source per auth mode behind the Graph client's TokenProvider.

- ``delegated``: the integration owner's refresh token from the sealed MSAL
  cache (PublicClientApplication), refreshed silently ahead of expiry.
- ``application``: client credentials, a certificate or a secret
  (ConfidentialClientApplication).

A token is acquired under a per-tenant lock, off the event loop and within the
configured time (:mod:`daemon.auth.platform`); a dead grant moves the tenant
to ``reauthorization_required`` with one log line per change of state.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from daemon.auth.cached import application_token, cached_secrets, parse_cache
from daemon.auth.explain import DEAD_GRANT_CODES, AuthContext, aadsts_code, explain, redirect_uris
from daemon.auth.scopes import application_scopes, delegated_scopes
from daemon.auth.states import AUTHORIZATION_REQUIRED, AUTHORIZED, REAUTHORIZATION_REQUIRED, AuthStates
from daemon.config import Config, TenantConfig, read_secret
from daemon.errors import AuthorityNotFound, AuthorizationRequired, ConfigError, IdentityPlatformError
from daemon.graph.client import TokenProvider
from daemon.graph.clouds import authority_url
from daemon.redact import remember_secret
from state.sealing import Sealer
from state.store import Store

# msal and requests (~0.08 s of a ``sync --once`` process's start-up) are imported where
# MSAL is asked for a token; a token still valid in the sealed cache is read without them.
if TYPE_CHECKING:
    import msal

    from daemon.auth.platform import IdentityHttpClient

Call = Callable[..., Awaitable[Any]]  # an msal call, bounded in time


class _NoAccount(Exception):
    """The token cache holds no signed-in account: the tenant was never authorized."""


class TokenSource(Protocol):
    """How one auth mode builds its MSAL app and gets a Graph token from it."""

    def build(self, tenant: TenantConfig, options: dict[str, Any]) -> msal.ClientApplication: ...

    async def acquire(self, app: Any, tenant: TenantConfig, call: Call, *, force_refresh: bool) -> dict[str, Any] | None: ...

    def owner(self, tenant: TenantConfig) -> str | None:
        """The owner recorded when a token is acquired (None: the sign-in records it)."""

    def refusal_is_final(self, error: str | None, code: str | None) -> bool:
        """Whether a refusal needs an admin (True) or may pass on the next attempt."""


class DelegatedTokens:
    def build(self, tenant: TenantConfig, options: dict[str, Any]) -> msal.ClientApplication:
        import msal  # only when a token must be fetched: see the note at the imports

        return msal.PublicClientApplication(tenant.application_id, **options)

    async def acquire(self, app: Any, tenant: TenantConfig, call: Call, *, force_refresh: bool) -> dict[str, Any] | None:
        accounts = await call(app.get_accounts)
        if not accounts:
            raise _NoAccount
        result: dict[str, Any] | None = await call(
            app.acquire_token_silent_with_error, delegated_scopes(tenant), accounts[0], force_refresh=force_refresh
        )
        return result

    def owner(self, tenant: TenantConfig) -> str | None:
        return None

    def refusal_is_final(self, error: str | None, code: str | None) -> bool:
        return error == "invalid_grant" or code in DEAD_GRANT_CODES


class ApplicationTokens:
    def build(self, tenant: TenantConfig, options: dict[str, Any]) -> msal.ClientApplication:
        import msal  # only when a token must be fetched: see the note at the imports

        return msal.ConfidentialClientApplication(tenant.application_id, client_credential=_credential(tenant), **options)

    async def acquire(self, app: Any, tenant: TenantConfig, call: Call, *, force_refresh: bool) -> dict[str, Any] | None:
        if force_refresh:  # Graph refused the cached token (401): MSAL would hand it out again
            await call(app.remove_tokens_for_client)
        result: dict[str, Any] | None = await call(app.acquire_token_for_client, application_scopes(tenant))
        return result

    def owner(self, tenant: TenantConfig) -> str | None:
        return f"application {tenant.application_id}"

    def refusal_is_final(self, error: str | None, code: str | None) -> bool:
        return True  # the credential or the consent is wrong: an admin fixes it


SOURCES: dict[str, TokenSource] = {"delegated": DelegatedTokens(), "application": ApplicationTokens()}


class Tokens:
    """Every tenant's MSAL app and token cache; ``config`` gives the current
    configuration (a reload replaces it)."""

    def __init__(self, config: Callable[[], Config], store: Store, sealer: Sealer, states: AuthStates) -> None:
        self.config = config
        self.store = store
        self.sealer = sealer
        self.states = states
        self._apps: dict[str, msal.ClientApplication] = {}
        self._caches: dict[str, msal.SerializableTokenCache] = {}
        self._http_clients: dict[str, IdentityHttpClient] = {}
        self._stored: dict[str, dict[str, Any]] = {}  # the stored cache as read, until MSAL takes over
        self._locks: dict[str, asyncio.Lock] = {}

    def token_provider(self, tenant_name: str) -> TokenProvider:
        """A Graph client's token provider for this tenant."""

        async def provide(*, force_refresh: bool = False) -> str:
            return await self.access_token(tenant_name, force_refresh=force_refresh)

        return provide

    async def call(self, msal_call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """An msal call off the loop, within ``[runs] identity_timeout_seconds``."""
        from daemon.auth.platform import bounded  # imports requests, which only msal's calls need

        return await bounded(self.config().runs.identity_timeout_seconds, msal_call, *args, **kwargs)

    async def access_token(self, tenant_name: str, *, force_refresh: bool = False) -> str:
        """A valid Graph access token, refreshed ahead of expiry; AuthorizationRequired
        or an IdentityPlatformError otherwise."""
        tenant = self.config().tenant(tenant_name)
        source = SOURCES[tenant.auth_mode]
        async with self._locks.setdefault(tenant.name, asyncio.Lock()):
            stored = None if force_refresh else await self._token_from_store(tenant)
            if stored is not None:
                await self.states.record(tenant.name, AUTHORIZED, owner=source.owner(tenant), reason=None)
                return stored
            try:
                app = await self.app(tenant)
            except ValueError as err:  # MSAL could not read the authority: unknown directory or wrong cloud
                problem = explain("invalid_tenant", str(err), self._context(tenant))
                await self.states.record(tenant.name, REAUTHORIZATION_REQUIRED, reason=f"{problem.code}: {problem.explanation}")
                raise AuthorityNotFound(f"{problem.title}: {problem.explanation}", hint=problem.actions[0]) from err
            try:
                result = await source.acquire(app, tenant, self.call, force_refresh=force_refresh)
            except _NoAccount:
                await self.states.record(tenant.name, AUTHORIZATION_REQUIRED, reason="not authorized yet")
                raise AuthorizationRequired(
                    f"tenant {tenant.name} is not authorized", hint=f"run: m365sync authorize --tenant {tenant.name}"
                ) from None
            await self.persist_cache(tenant)
            if result and "access_token" in result:
                owner = source.owner(tenant)
                if owner is not None:
                    await self.states.record(tenant.name, AUTHORIZED, owner=owner, reason=None)
                remember_secret(result.get("refresh_token"), issued=True)
                remember_secret(str(result["access_token"]), issued=True)
                return str(result["access_token"])
            raise await self._refusal(tenant, source, result)

    async def _refusal(self, tenant: TenantConfig, source: TokenSource, result: dict[str, Any] | None) -> Exception:
        """The error for a refusal, its state recorded; it carries the platform's codes,
        never its words (see platform.py)."""
        error = (result or {}).get("error")
        description = (result or {}).get("error_description")
        problem = explain(error or "invalid_grant", description or "no usable token in the cache", self._context(tenant))
        code = aadsts_code(description)
        if result is None or source.refusal_is_final(error, code):
            await self.states.record(tenant.name, REAUTHORIZATION_REQUIRED, reason=f"{problem.code}: {problem.explanation}")
            return AuthorizationRequired(f"{problem.title}: {problem.code}: {problem.explanation}", hint=problem.actions[0])
        return IdentityPlatformError(f"token refresh failed: {problem.code}: {problem.explanation}",
                                    code=problem.code, hint="the next attempt retries")

    def _context(self, tenant: TenantConfig) -> AuthContext:
        return AuthContext(tenant, tuple(uri for _, uri in redirect_uris(self.config().server)))

    # --- apps and caches ---

    async def _token_from_store(self, tenant: TenantConfig) -> str | None:
        """Application mode's token still valid in the stored cache, read without MSAL
        (:mod:`daemon.auth.cached`) until this process has built the tenant's MSAL app."""
        if tenant.auth_mode != "application" or tenant.name in self._apps:
            return None
        cache = self._stored.get(tenant.name)
        if cache is None:  # read once, not per Graph request
            sealed = await self.store.load_token_cache(tenant.name)
            cache = self._stored[tenant.name] = parse_cache(self.sealer.open(sealed).decode()) if sealed else {}
            for secret in cached_secrets(cache):  # as _remember_tokens does when MSAL loads the cache
                remember_secret(secret, issued=True)
        return application_token(cache, tenant.application_id, authority_url(tenant), application_scopes(tenant),
                                 time.time())

    async def app(self, tenant: TenantConfig) -> msal.ClientApplication:
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
        # MSAL reads the authority's metadata while constructing: off the loop and bounded too.
        app = await self.call(SOURCES[tenant.auth_mode].build, tenant, options)
        self._apps[tenant.name] = app
        return app

    def _http_client(self, tenant: TenantConfig) -> IdentityHttpClient:
        """One per trusted CA file, shared by the tenants' apps (see IdentityHttpClient)."""
        from daemon.auth.platform import IdentityHttpClient  # imports requests, which only msal's calls need
        from daemon.tls import msal_http_client

        key = str(tenant.ca_file) if tenant.ca_file else ""
        if key not in self._http_clients:
            self._http_clients[key] = IdentityHttpClient(
                msal_http_client(tenant.ca_file), lambda: self.config().runs.identity_timeout_seconds
            )
        return self._http_clients[key]

    async def _cache(self, tenant: TenantConfig) -> msal.SerializableTokenCache:
        cache = self._caches.get(tenant.name)
        if cache is None:
            import msal  # only when a token must be fetched: see the note at the imports

            cache = msal.SerializableTokenCache()
            stored = await self.store.load_token_cache(tenant.name)
            if stored:
                cache.deserialize(self.sealer.open(stored).decode())
                _remember_tokens(cache)
            self._caches[tenant.name] = cache
        return cache

    async def persist_cache(self, tenant: TenantConfig) -> None:
        """Write the MSAL cache back, sealed, only when it changed."""
        cache = self._caches.get(tenant.name)
        if cache is not None and cache.has_state_changed:
            _remember_tokens(cache)  # a sign-in or a refresh was just issued new ones
            await self.store.save_token_cache(tenant.name, self.sealer.seal(cache.serialize().encode()))
            cache.has_state_changed = False

    async def drop(self, tenant: TenantConfig) -> None:
        """Forget the tenant's tokens here and in the state."""
        self.forget(tenant.name)
        await self.store.drop_token_cache(tenant.name)

    def forget(self, tenant_name: str) -> None:
        """Read the token cache from the state again next time (another daemon of a shared state wrote it)."""
        self._caches.pop(tenant_name, None)
        self._stored.pop(tenant_name, None)
        self._apps.pop(tenant_name, None)

    def forget_app(self, tenant_name: str) -> None:
        """Build the tenant's MSAL app again next time (its settings changed)."""
        self._apps.pop(tenant_name, None)


def _remember_tokens(cache: msal.SerializableTokenCache) -> None:
    """Every token the cache holds is redacted from all the process emits."""
    kinds = cache.CredentialType
    for kind in (kinds.ACCESS_TOKEN, kinds.REFRESH_TOKEN, kinds.ID_TOKEN):
        for entry in cache.search(kind):
            remember_secret(entry.get("secret"), issued=True)


def _credential(tenant: TenantConfig) -> str | dict[str, str]:
    """A certificate (preferred) or a secret, read from their files."""
    if tenant.client_certificate_file is not None and tenant.client_private_key_file is not None:
        try:
            cert_pem = tenant.client_certificate_file.read_bytes()  # a certificate is public
        except OSError as err:
            raise AuthorizationRequired(f"cannot read {tenant.client_certificate_file}: {err.strerror}") from err
        key_pem = read_secret(tenant.client_private_key_file)
        from cryptography import x509  # certificate credentials only: not imported by every process
        from cryptography.hazmat.primitives import serialization

        certificate = x509.load_pem_x509_certificate(cert_pem)
        thumbprint = hashlib.sha1(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
        return {"private_key": key_pem, "thumbprint": thumbprint}
    if tenant.client_secret_file is not None:
        return read_secret(tenant.client_secret_file)
    raise ConfigError([])
