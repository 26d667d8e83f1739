"""Entra's wire formats the fake identity platform speaks: its JSON error
body, base64url, client certificates and the assertions signed with them."""

from __future__ import annotations

import base64
import datetime
import json
import time
import uuid
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def entra_error(status: int, error: str, code: int, message: str) -> web.Response:
    """Entra's error body, e.g. ``AADSTS50057: The user account is disabled.``"""
    now = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    trace = str(uuid.uuid4())
    body = {
        "error": error,
        "error_description": f"AADSTS{code}: {message} Trace ID: {trace} Correlation ID: {uuid.uuid4()} Timestamp: {now}",
        "error_codes": [code],
        "timestamp": now,
        "trace_id": trace,
        "correlation_id": str(uuid.uuid4()),
    }
    return web.json_response(body, status=status)


def assertion_claims(certificate_pem: bytes, assertion: str) -> dict[str, Any] | None:
    """The claims of a client assertion signed with the certificate's key (RS256 or PS256); None if not."""
    try:
        header_b64, claims_b64, signature_b64 = assertion.split(".")
        header = json.loads(b64url_decode(header_b64))
        claims: dict[str, Any] = json.loads(b64url_decode(claims_b64))
        public_key = x509.load_pem_x509_certificate(certificate_pem).public_key()
        assert isinstance(public_key, rsa.RSAPublicKey)
        signed = f"{header_b64}.{claims_b64}".encode()
        signature = b64url_decode(signature_b64)
        if header.get("alg") == "PS256":
            public_key.verify(signature, signed, padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH), hashes.SHA256())
        else:
            public_key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
    except Exception:
        return None
    return claims


def certificate_pair(common_name: str = "m365sync test app") -> tuple[bytes, bytes]:
    """A self-signed certificate and its private key (PEM), for application mode."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert_pem, key_pem
