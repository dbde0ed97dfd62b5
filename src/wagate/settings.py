"""Settings from `WAGATE_*` environment variables (documented in the README)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/wagate.db"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway reads from its environment, with the defaults it uses."""

    database_url: str = DEFAULT_DATABASE_URL
    # SQLite durability: FULL fsyncs the WAL on every commit, so an acknowledged
    # message survives power loss, not only a process crash; group commit pays
    # that fsync once per batch rather than once per message.
    sqlite_synchronous: str = "FULL"
    max_body_bytes: int = 64 * 1024
    # How long an API key or phone number lookup is trusted before the database
    # is asked again: a revoked key stops working within this many seconds in
    # every process (at once in the process that revoked it).
    auth_cache_seconds: float = 2.0
    idempotency_window_seconds: int = 24 * 3600
    message_ttl_seconds: int = 30 * 24 * 3600
    log_level: str = "INFO"
    meta_base_url: str = "https://graph.facebook.com"
    meta_graph_version: str = "v23.0"
    meta_verify_token: str = ""
    meta_app_secret: str = ""
    public_url: str = field(default="")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every field from `WAGATE_<FIELD>`; unset variables keep the default."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f"WAGATE_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            kind = type(getattr(cls(), f.name))
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise SystemExit(
                    f"WAGATE_{f.name.upper()}={raw!r} is not a valid {kind.__name__}"
                ) from None
        return cls(**values)  # type: ignore[arg-type]
