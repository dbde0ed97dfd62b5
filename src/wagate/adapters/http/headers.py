"""Credentials in request headers, read the same way by the gateway and the sandbox."""

from __future__ import annotations


def bearer_token(authorization: str | bytes | None) -> str:
    """The token of an `Authorization: Bearer <token>` header, or '' (none, or another scheme)."""
    if not authorization:
        return ""
    text = authorization.decode("latin-1") if isinstance(authorization, bytes) else authorization
    scheme, _, token = text.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def api_key_of(x_api_key: str | None, authorization: str | None) -> str | None:
    """The API key from `X-API-Key`, else from `Authorization: Bearer <key>`."""
    if x_api_key:
        return x_api_key.strip()
    return bearer_token(authorization) or None
