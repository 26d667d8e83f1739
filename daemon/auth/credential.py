"""What MSAL is given for a tenant's application: its credential (a
certificate, preferred, or a secret, read from their files) and the
auth-code flow with PKCE."""

from __future__ import annotations

import hashlib
import warnings
from typing import Any

import msal
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from daemon.config import TenantConfig, read_secret
from daemon.errors import AuthorizationRequired, ConfigError


def initiate_flow(app: msal.ClientApplication, scopes: list[str], redirect_uri: str, state: str) -> dict[str, Any]:
    """MSAL's auth-code flow with PKCE. The callback takes the query response
    mode (the PBX's documented GET callback); MSAL's advice to prefer
    form_post is silenced because the code is single-use, PKCE-bound and
    redeemed at once, and the callback never logs its query."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="response_mode='form_post' is recommended")
        flow: dict[str, Any] = app.initiate_auth_code_flow(scopes, redirect_uri=redirect_uri, state=state)
    return flow


def client_credential(tenant: TenantConfig) -> str | dict[str, str]:
    """A certificate (preferred) or a secret, read from their files."""
    if tenant.client_certificate_file is not None and tenant.client_private_key_file is not None:
        try:
            cert_pem = tenant.client_certificate_file.read_bytes()  # a certificate is public
        except OSError as err:
            raise AuthorizationRequired(f"cannot read {tenant.client_certificate_file}: {err.strerror}") from err
        key_pem = read_secret(tenant.client_private_key_file)
        certificate = x509.load_pem_x509_certificate(cert_pem)
        thumbprint = hashlib.sha1(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
        return {"private_key": key_pem, "thumbprint": thumbprint}
    if tenant.client_secret_file is not None:
        return read_secret(tenant.client_secret_file)
    raise ConfigError([])
