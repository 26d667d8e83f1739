"""What every documented authorization failure means, and what to do, with
the exact values involved (redirect URIs, consent link, cloud).

Used for the error pages, the log lines and ``/readyz``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlencode

from daemon.config import CALLBACK_PATH, ServerConfig, TenantConfig
from daemon.graph.clouds import CLOUDS, authority_url

# The refresh token is dead: only a new sign-in helps.
DEAD_GRANT_CODES = frozenset({"50057", "50173", "70008", "700082", "70043", "65001", "50076", "50079"})


@dataclass(frozen=True)
class AuthProblem:
    code: str  # "AADSTS50011", "access_denied", "tenant_not_found", ...
    title: str
    explanation: str
    actions: tuple[str, ...]


@dataclass(frozen=True)
class AuthContext:
    tenant: TenantConfig
    redirect_uris: tuple[str, ...]
    used_redirect_uri: str | None = None


def redirect_uris(server: ServerConfig) -> list[tuple[str, str]]:
    """The exact redirect URIs to register: the PBX path, and the SBC one if configured."""
    base = server.public_url or f"http://localhost:{server.port}"
    uris = [("PBX", base + CALLBACK_PATH)]
    if server.sbc_public_url:
        uris.append(("SBC", server.sbc_public_url + CALLBACK_PATH))
    return uris


def aadsts_code(description: str | None) -> str | None:
    """``"AADSTS50011: The redirect..."`` -> ``"50011"``."""
    match = re.search(r"AADSTS(\d+)", description or "")
    return match.group(1) if match else None


def admin_consent_url(tenant: TenantConfig, redirect_uri: str | None = None) -> str:
    query = {"client_id": tenant.application_id}
    if redirect_uri:
        query["redirect_uri"] = redirect_uri
    return f"{authority_url(tenant)}/adminconsent?{urlencode(query)}"


def explain(error: str | None, description: str | None, context: AuthContext) -> AuthProblem:
    """The operator-facing explanation of an OAuth error or an AADSTS code."""
    code = aadsts_code(description)
    tenant = context.tenant
    expected = ", ".join(context.redirect_uris)
    if code == "50011":
        used = context.used_redirect_uri or context.redirect_uris[0]
        return AuthProblem(
            "AADSTS50011",
            "Reply URL mismatch",
            f"Microsoft was sent the redirect URI {used}, and the app registration "
            f"{tenant.application_id} does not list it exactly. Expected in Entra: {expected}.",
            (
                "In Entra ID > App registrations > your app > Authentication, add exactly: " + expected,
                "Check the usual causes: a trailing slash (/callback/ms365/ vs /callback/ms365), "
                "http vs https, the port (:8887), the SBC host vs the PBX host.",
                "Then start the authorization again.",
            ),
        )
    if code in ("650053", "65001") or error == "consent_required":
        return AuthProblem(
            f"AADSTS{code or '65001'}",
            "Consent missing",
            "The account that signed in may not consent to the permissions this integration needs, "
            "or consent was never granted for the organization.",
            (
                "Sign in as a Cloud Application Administrator (or higher), or have a Global Admin grant "
                f"admin consent here: {admin_consent_url(tenant)}",
                "Or in Entra ID > your app > API permissions, click 'Grant admin consent'.",
            ),
        )
    if code == "7000218":
        return AuthProblem(
            "AADSTS7000218",
            "The redirect URI is registered under the 'Web' platform",
            "A 'Web' redirect URI requires a client secret when the code is redeemed; this integration "
            "is a public client and sends none.",
            (
                f"In Entra ID > your app > Authentication, remove {expected} from 'Web' and add it under "
                "'Mobile and desktop applications', then enable 'Allow public client flows'.",
                'Or switch this tenant to auth_mode = "application" with a certificate or secret.',
            ),
        )
    if code == "700025":
        return AuthProblem(
            "AADSTS700025",
            "A public client sent a credential",
            "The app registration is a public client, so no client secret or certificate may be sent.",
            (
                "Remove client_secret_file / client_certificate_file from this tenant, or use "
                'auth_mode = "application" and register the credential on the app.',
                "If Entra has a secret you do not use, remove it under Certificates & secrets.",
            ),
        )
    if code == "90002" or error in ("invalid_tenant", "tenant_not_found"):
        others = ", ".join(f'"{name}" ({cloud.authority_host})' for name, cloud in CLOUDS.items()
                           if name != tenant.national_cloud)
        return AuthProblem(
            "AADSTS90002",
            "Tenant not found in this cloud",
            f"The directory {tenant.directory_id} was not found at {authority_url(tenant)} "
            f"(national_cloud = {tenant.national_cloud}, whose sign-in host is "
            f"{CLOUDS[tenant.national_cloud].authority_host}).",
            (
                f"Check directory_id, and whether the tenant lives in another national cloud: national_cloud = "
                f"{others}; the Entra admin center you registered the app in tells which.",
            ),
        )
    if error == "access_denied" or code == "65004":
        return AuthProblem(
            "access_denied",
            "Sign-in cancelled",
            "The sign-in or the consent was cancelled, so nothing was authorized.",
            ("Start the authorization again and accept the requested permissions.",),
        )
    if code == "54005":
        return AuthProblem(
            "AADSTS54005",
            "Authorization code already used",
            "The page was reloaded or the link used twice; each sign-in can be redeemed once.",
            ("Start the authorization again.",),
        )
    if code == "501481":
        return AuthProblem(
            "AADSTS501481",
            "PKCE verifier mismatch",
            "The code was issued to another authorization attempt.",
            ("Start the authorization again, in one browser tab.",),
        )
    if code in DEAD_GRANT_CODES or error == "invalid_grant":
        reasons = {
            "50057": "the integration owner's account is disabled",
            "50173": "the grant was revoked (password change or admin action)",
            "70008": "the refresh token expired after inactivity",
            "700082": "the refresh token expired after inactivity",
            "70043": "a sign-in frequency policy requires a new sign-in",
            "65001": "consent for the app was revoked",
        }
        reason = reasons.get(code or "", "the stored authorization is no longer valid")
        return AuthProblem(
            f"AADSTS{code}" if code else "invalid_grant",
            "Re-authorization required",
            f"Microsoft refused the stored refresh token: {reason}.",
            ("Have an active administrator run the authorization again (m365sync authorize).",),
        )
    if code == "7000215":
        return AuthProblem("AADSTS7000215", "Invalid client secret", "The secret in client_secret_file is not the app's current secret value.",
                           ("Create a new secret in Entra and write its value (not its ID) into client_secret_file.",))
    if code in ("700027", "700024"):
        return AuthProblem(f"AADSTS{code}", "Certificate not accepted", "Entra did not accept the client certificate assertion.",
                           ("Upload client_certificate_file's certificate to the app under Certificates & secrets.",))
    return AuthProblem(
        f"AADSTS{code}" if code else (error or "unknown_error"),
        "Authorization failed",
        re.sub(r"^AADSTS\d+:\s*", "", description or "") or error or "Microsoft returned an error without a description.",
        ("Start the authorization again; if it keeps failing, check the app registration.",),
    )
