"""A fake Microsoft identity platform (Entra ID v2.0 endpoints) over HTTPS.

Enough of ``login.microsoftonline.com`` for MSAL to run for real: OpenID
discovery per tenant, the authorize page (a sign-in form), the admin consent
page, and the token endpoint with the authorization-code (PKCE S256),
refresh-token and client-credentials (certificate assertion or secret)
grants. Errors use Entra's JSON shape (``error``, ``error_description``
starting with the AADSTS code, ``error_codes``), and the behaviours an admin
meets are switchable: unregistered or "Web" redirect URIs, missing consent,
a user who cancels, a disabled owner, a revoked grant, an unknown tenant;
so are the token endpoint's faults (``faults``: no answer, answers of the
wrong shape, an error quoting the request).
"""

from __future__ import annotations

import hashlib
import html
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sim.entra import assertion_claims, b64url, entra_error
from sim.idp_faults import TokenFaults

ACCESS_TOKEN_LIFETIME = 3600


@dataclass
class FakeUser:
    username: str
    oid: str = field(default_factory=lambda: str(uuid.uuid4()))
    name: str = "Integration Owner"
    enabled: bool = True


@dataclass
class FakeApp:
    """An app registration: redirect URIs per platform, credentials, consent."""

    client_id: str
    public_redirect_uris: set[str] = field(default_factory=set)  # "Mobile and desktop applications"
    web_redirect_uris: set[str] = field(default_factory=set)  # "Web" platform: needs a credential
    client_secret: str | None = None
    certificate_pem: bytes | None = None
    consented: bool = True
    admin_consent_granted: bool = False


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    username: str
    nonce: str | None
    scope: str
    used: bool = False


@dataclass
class _Grant:
    client_id: str
    username: str
    scope: str
    revoked_with: int | None = None  # an AADSTS code once the grant is dead


class FakeIdentityProvider:
    """One or more fake Entra tenants on one HTTPS server."""

    def __init__(self, base_url: str = "") -> None:
        self.base_url = base_url  # set once the server listens
        self.tenants: dict[str, dict[str, FakeApp]] = {}
        self.users: dict[str, FakeUser] = {}
        self.issued_access_tokens: set[str] = set()
        self.access_token_lifetime = ACCESS_TOKEN_LIFETIME  # below msal's 5 minutes: every silent call refreshes
        self.token_requests: list[dict[str, str]] = []
        self.cancel_next_sign_in = False
        self.faults = TokenFaults()  # the token endpoint's faults (sim/idp_faults.py)
        self._codes: dict[str, _Code] = {}
        self.redeemed_refresh_tokens: set[str] = set()
        self._grants: dict[str, _Grant] = {}
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    # --- set-up ---

    def add_tenant(self, tenant_id: str) -> None:
        self.tenants.setdefault(tenant_id, {})

    def register_app(self, tenant_id: str, app: FakeApp) -> FakeApp:
        self.add_tenant(tenant_id)
        self.tenants[tenant_id][app.client_id] = app
        return app

    def add_user(self, username: str, **kwargs: Any) -> FakeUser:
        user = FakeUser(username, **kwargs)
        self.users[username.lower()] = user
        return user

    def revoke_grants(self, username: str, code: int = 50057) -> None:
        """The owner left (50057: disabled) or the grant was revoked (70008, 700082)."""
        for grant in self._grants.values():
            if grant.username.lower() == username.lower():
                grant.revoked_with = code

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.faults.middleware])
        app.on_shutdown.append(self.faults.on_shutdown)
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/{tenant}/oauth2/v2.0/authorize", self.authorize_page)
        app.router.add_post("/{tenant}/oauth2/v2.0/authorize", self.authorize_submit)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self.token)
        app.router.add_get("/{tenant}/adminconsent", self.admin_consent_page)
        app.router.add_post("/{tenant}/adminconsent", self.admin_consent_submit)
        app.router.add_get("/{tenant}/discovery/v2.0/keys", self.keys)
        return app

    # --- discovery ---

    def _unknown_tenant(self, tenant: str) -> web.Response | None:
        if tenant in self.tenants:
            return None
        return entra_error(
            400, "invalid_tenant", 90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing "
            "into the correct cloud. Check with your subscription administrator, this may happen if there are "
            "no active subscriptions for the tenant.",
        )

    async def discovery(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        unknown = self._unknown_tenant(tenant)
        if unknown is not None:
            return unknown
        base = f"{self.base_url}/{tenant}"
        return web.json_response({
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_types_supported": ["code", "id_token", "code id_token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "tenant_region_scope": "EU",
        })

    async def keys(self, _request: web.Request) -> web.Response:
        numbers = self._key.public_key().public_numbers()
        n = b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big"))
        e = b64url(numbers.e.to_bytes(3, "big"))
        return web.json_response({"keys": [{"kty": "RSA", "use": "sig", "kid": "fake", "n": n, "e": e}]})

    # --- browser pages ---

    def _app_for(self, tenant: str, client_id: str) -> FakeApp | None:
        return self.tenants.get(tenant, {}).get(client_id)

    def _page(self, title: str, body: str, status: int = 200) -> web.Response:
        text = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
        return web.Response(text=text, content_type="text/html", status=status)

    def _error_page(self, code: int, message: str) -> web.Response:
        return self._page("Sign in", f"<p id='error'>AADSTS{code}: {html.escape(message)}</p>", status=400)

    async def authorize_page(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        query = request.query
        if tenant not in self.tenants:
            return self._error_page(90002, f"Tenant '{tenant}' not found.")
        app = self._app_for(tenant, query.get("client_id", ""))
        if app is None:
            return self._error_page(700016, f"Application with identifier '{query.get('client_id')}' was not found in the directory.")
        redirect_uri = query.get("redirect_uri", "")
        if redirect_uri not in app.public_redirect_uris | app.web_redirect_uris:
            # Like Entra, an unregistered reply URL is shown here, never redirected to.
            return self._error_page(50011, f"The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs configured for the application '{app.client_id}'.")
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return self._error_page(900144, "The request body must contain the following parameter: 'code_challenge'.")
        hidden = "".join(
            f"<input type='hidden' name='{html.escape(k)}' value='{html.escape(v)}'>" for k, v in query.items()
        )
        form = (
            f"<form method='post'>{hidden}"
            "<label>Account <input name='username' id='username'></label>"
            "<button type='submit' name='action' value='signin' id='signin'>Sign in</button>"
            "<button type='submit' name='action' value='cancel' id='cancel'>Cancel</button></form>"
        )
        return self._page("Sign in to your account", form)

    async def authorize_submit(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        form = await request.post()
        params = {k: str(v) for k, v in form.items()}
        app = self._app_for(tenant, params.get("client_id", ""))
        redirect_uri = params.get("redirect_uri", "")
        if app is None or redirect_uri not in app.public_redirect_uris | app.web_redirect_uris:
            return self._error_page(50011, "The redirect URI does not match.")
        state = params.get("state", "")
        if params.get("action") == "cancel" or self.cancel_next_sign_in:
            self.cancel_next_sign_in = False
            return self._redirect(redirect_uri, error="access_denied", error_description="AADSTS65004: User declined to consent to access the app.", state=state)
        user = self.users.get(params.get("username", "").lower())
        if user is None:
            return self._error_page(50034, "The user account does not exist in this directory.")
        if not user.enabled:
            return self._error_page(50057, "The user account is disabled.")
        if not app.consented:
            return self._redirect(redirect_uri, error="consent_required", error_description=f"AADSTS65001: The user or administrator has not consented to use the application with ID '{app.client_id}'. Send an interactive authorization request for this user and resource.", state=state)
        code = secrets.token_urlsafe(32)
        self._codes[code] = _Code(app.client_id, redirect_uri, params.get("code_challenge", ""), user.username, params.get("nonce"), params.get("scope", ""))
        client_info = b64url(json.dumps({"uid": user.oid, "utid": tenant}).encode())
        return self._redirect(redirect_uri, code=code, state=state, session_state=str(uuid.uuid4()), client_info=client_info)

    async def admin_consent_page(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        query = request.query
        app = self._app_for(tenant, query.get("client_id", ""))
        if app is None:
            return self._error_page(700016, "Application was not found in the directory.")
        if query.get("redirect_uri", "") not in app.public_redirect_uris | app.web_redirect_uris:
            return self._error_page(50011, f"The redirect URI '{query.get('redirect_uri')}' does not match.")
        hidden = "".join(f"<input type='hidden' name='{html.escape(k)}' value='{html.escape(v)}'>" for k, v in query.items())
        return self._page("Permissions requested", f"<form method='post'>{hidden}<button name='action' value='accept' id='accept'>Accept</button><button name='action' value='cancel' id='cancel'>Cancel</button></form>")

    async def admin_consent_submit(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        params = {k: str(v) for k, v in (await request.post()).items()}
        app = self._app_for(tenant, params.get("client_id", ""))
        if app is None:
            return self._error_page(700016, "Application was not found in the directory.")
        if params.get("action") != "accept":
            return self._redirect(params["redirect_uri"], error="access_denied", error_description="AADSTS65004: The admin declined to consent.", state=params.get("state", ""))
        app.admin_consent_granted = True
        return self._redirect(params["redirect_uri"], admin_consent="True", tenant=tenant, state=params.get("state", ""))

    def _redirect(self, uri: str, **params: str) -> web.Response:
        raise web.HTTPFound(f"{uri}?{urlencode(params)}")

    # --- token endpoint ---

    async def token(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        unknown = self._unknown_tenant(tenant)
        if unknown is not None:
            return unknown
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.token_requests.append({k: v for k, v in form.items() if k in ("grant_type", "client_id", "scope", "redirect_uri")})
        app = self._app_for(tenant, form.get("client_id", ""))
        if app is None:
            return entra_error(400, "unauthorized_client", 700016, f"Application with identifier '{form.get('client_id')}' was not found in the directory '{tenant}'.")
        grant = form.get("grant_type")
        if grant == "authorization_code":
            return self._redeem_code(tenant, app, form)
        if grant == "refresh_token":
            return self._refresh(tenant, app, form)
        if grant == "client_credentials":
            return self._client_credentials(tenant, app, form)
        return entra_error(400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant}'.")

    def _credential_problem(self, app: FakeApp, form: dict[str, str], tenant: str) -> web.Response | None:
        """None when the client authenticated as its registration requires."""
        sent_secret = "client_secret" in form
        sent_assertion = "client_assertion" in form
        redirect_uri = form.get("redirect_uri")
        public_flow = redirect_uri is not None and redirect_uri in app.public_redirect_uris
        if public_flow and (sent_secret or sent_assertion):
            return entra_error(401, "invalid_client", 700025, "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.")
        if sent_secret:
            if app.client_secret is None or form["client_secret"] != app.client_secret:
                return entra_error(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.")
            return None
        if sent_assertion:
            return self._check_assertion(app, form["client_assertion"], tenant)
        if redirect_uri is not None and redirect_uri in app.web_redirect_uris:
            return entra_error(401, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
        if redirect_uri is None:
            return entra_error(401, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
        return None

    def _check_assertion(self, app: FakeApp, assertion: str, tenant: str) -> web.Response | None:
        claims = assertion_claims(app.certificate_pem, assertion) if app.certificate_pem is not None else None
        if claims is None:
            return entra_error(401, "invalid_client", 700027, "Client assertion failed signature validation.")
        if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id or claims.get("exp", 0) < time.time():
            return entra_error(401, "invalid_client", 700024, "Client assertion is not within its valid time range or has wrong claims.")
        return None

    def _redeem_code(self, tenant: str, app: FakeApp, form: dict[str, str]) -> web.Response:
        problem = self._credential_problem(app, form, tenant)
        if problem is not None:
            return problem
        code = self._codes.get(form.get("code", ""))
        if code is None:
            return entra_error(400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
        if code.used:
            return entra_error(400, "invalid_grant", 54005, "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.")
        code.used = True
        if code.redirect_uri != form.get("redirect_uri"):
            return entra_error(400, "invalid_grant", 50011, f"The redirect URI '{form.get('redirect_uri')}' specified in the request does not match the redirect URI the code was issued for.")
        verifier = form.get("code_verifier", "")
        if b64url(hashlib.sha256(verifier.encode()).digest()) != code.challenge:
            return entra_error(400, "invalid_grant", 501481, "The Code_Verifier does not match the code_challenge supplied in the authorization request.")
        user = self.users[code.username.lower()]
        return self._tokens(tenant, app, user, code.scope, code.nonce)

    def _refresh(self, tenant: str, app: FakeApp, form: dict[str, str]) -> web.Response:
        grant = self._grants.get(form.get("refresh_token", ""))
        if grant is None or grant.client_id != app.client_id:
            return entra_error(400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
        if grant.revoked_with is not None:
            messages = {
                50057: "The user account is disabled.",
                50173: "The provided grant has expired due to it being revoked, a fresh auth token is needed.",
                70008: "The provided authorization code or refresh token has expired due to inactivity.",
                700082: "The refresh token has expired due to inactivity.",
                65001: "The user or administrator has not consented to use the application.",
            }
            return entra_error(400, "invalid_grant", grant.revoked_with, messages.get(grant.revoked_with, "The grant is no longer valid."))
        del self._grants[form["refresh_token"]]  # refresh tokens rotate
        self.redeemed_refresh_tokens.add(form["refresh_token"])
        user = self.users[grant.username.lower()]
        if not user.enabled:
            return entra_error(400, "invalid_grant", 50057, "The user account is disabled.")
        return self._tokens(tenant, app, user, grant.scope, None)

    def _client_credentials(self, tenant: str, app: FakeApp, form: dict[str, str]) -> web.Response:
        problem = self._credential_problem(app, form, tenant)
        if problem is not None:
            return problem
        access = "at-" + secrets.token_urlsafe(24)
        self.issued_access_tokens.add(access)
        return web.json_response({"token_type": "Bearer", "expires_in": ACCESS_TOKEN_LIFETIME, "ext_expires_in": ACCESS_TOKEN_LIFETIME, "access_token": access})

    def _tokens(self, tenant: str, app: FakeApp, user: FakeUser, scope: str, nonce: str | None) -> web.Response:
        access = "at-" + secrets.token_urlsafe(24)
        refresh = "0.rt-" + secrets.token_urlsafe(32)
        self.issued_access_tokens.add(access)
        self._grants[refresh] = _Grant(app.client_id, user.username, scope)
        now = int(time.time())
        claims = {
            "iss": f"{self.base_url}/{tenant}/v2.0",
            "aud": app.client_id,
            "iat": now,
            "nbf": now,
            "exp": now + ACCESS_TOKEN_LIFETIME,
            "sub": hashlib.sha256(user.oid.encode()).hexdigest()[:43],
            "oid": user.oid,
            "tid": tenant,
            "name": user.name,
            "preferred_username": user.username,
            "ver": "2.0",
        }
        if nonce:
            claims["nonce"] = nonce
        granted = " ".join(s for s in scope.split() if s not in ("openid", "profile", "offline_access"))
        return web.json_response({
            "token_type": "Bearer",
            "scope": granted,
            "expires_in": self.access_token_lifetime,
            "ext_expires_in": self.access_token_lifetime,
            "access_token": access,
            "refresh_token": refresh,
            "id_token": self._jwt(claims),
            "client_info": b64url(json.dumps({"uid": user.oid, "utid": tenant}).encode()),
        })

    def _jwt(self, claims: dict[str, Any]) -> str:
        header = b64url(json.dumps({"typ": "JWT", "alg": "RS256", "kid": "fake"}).encode())
        body = b64url(json.dumps(claims).encode())
        signature = self._key.sign(f"{header}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{header}.{body}.{b64url(signature)}"
