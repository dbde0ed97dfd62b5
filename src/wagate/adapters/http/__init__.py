"""The HTTP surface: a bare ASGI fast path for sends in front of the Litestar app."""
