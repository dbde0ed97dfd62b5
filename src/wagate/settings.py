"""Settings from `WAGATE_*` environment variables (documented in docs/settings.md)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from wagate.domain.delivery import DEFAULT_TTL_S
from wagate.domain.notifications import PAUSE_AFTER_S
from wagate.domain.pacing import PAIR_BURST, PAIR_INTERVAL_S

# Where the default SQLite database lives (WAGATE_DATA_DIR): relative paths are taken
# from the directory the process starts in and made absolute at once.
DEFAULT_DATA_DIR = "./data"
DATABASE_FILE = "wagate.db"
SQLITE_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def default_database_url(data_dir: str) -> str:
    """The SQLite database under a data directory, as an absolute URL."""
    return f"sqlite+aiosqlite:///{Path(data_dir, DATABASE_FILE)}"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway reads from its environment, with the defaults it uses."""

    # Empty: the SQLite file `wagate.db` under `data_dir` (see __post_init__).
    database_url: str = ""
    data_dir: str = DEFAULT_DATA_DIR
    # SQLite durability: FULL fsyncs the WAL on every commit, so an acknowledged
    # message survives power loss, not only a process crash; group commit pays
    # that fsync once per batch rather than once per message.
    sqlite_synchronous: str = "FULL"
    max_body_bytes: int = 64 * 1024
    # How long any request body may take to arrive (HTTP 408 after): a client that
    # sends a byte at a time cannot hold a request slot for longer.
    body_timeout_seconds: float = 10.0
    # How long an API key or phone number lookup is trusted before the database
    # is asked again: a revoked key stops working within this many seconds in
    # every process (at once in the process that revoked it).
    auth_cache_seconds: float = 2.0
    idempotency_window_seconds: int = 24 * 3600
    message_ttl_seconds: int = DEFAULT_TTL_S
    log_level: str = "INFO"
    meta_base_url: str = "https://graph.facebook.com"
    meta_graph_version: str = "v23.0"
    meta_verify_token: str = ""
    meta_app_secret: str = ""
    # Where this gateway is reached (the embedded sandbox posts its webhooks here);
    # `wagate serve` sets it from --host/--port when it is not given.
    public_url: str = field(default="")
    # The Graph API of `sandbox` numbers; default: the embedded one, `{public_url}/sandbox`.
    sandbox_url: str = ""
    # Whether `wagate serve` runs a delivery worker in its process (`--no-worker`: 0).
    worker: bool = True
    upstream_timeout_seconds: float = 30.0
    lease_seconds: float = 60.0
    # Each (number, recipient) pair is paced as Meta limits it (131056 beyond): about
    # one message per this many seconds, bursts of up to `pair_burst` (one of which
    # is kept spare for network jitter, see `domain.pacing.pair_rate`).
    pair_interval_seconds: float = PAIR_INTERVAL_S
    pair_burst: int = PAIR_BURST
    # How often a worker looks for queued work nobody told it of (one query). New work
    # wakes it at once from its own process and, on PostgreSQL, from any process; on
    # SQLite, a worker in another process than the API finds it within this time.
    worker_poll_seconds: float = 1.0
    # Messages final (read or failed) for longer than this are deleted by the workers,
    # with their statuses and events; 0 keeps everything.
    retention_days: int = 90
    # The key that encrypts access tokens and the webhook secret at rest. Unset on
    # SQLite: a key generated once into `<database>.key`; required on PostgreSQL.
    secret_key: str = ""
    # Bearer token of the operator routes (the sandbox's /_stats, /_sends, /_reset, /_numbers);
    # unset: those routes are refused.
    admin_token: str = ""
    # Peers whose X-Forwarded-Proto and X-Forwarded-Host are believed for the links the
    # API returns (`paging.next`): addresses or networks, comma-separated; `*` is every
    # peer, empty is nobody. Default: a reverse proxy on the same machine.
    trusted_proxies: str = "127.0.0.1,::1"
    # Customer webhooks: an endpoint whose every attempt failed for this long is paused
    # (its deliveries wait, nothing is lost, until it is resumed); 0 never pauses.
    webhook_pause_after_seconds: float = PAUSE_AFTER_S
    # Attempts in flight to one endpoint at once, across every worker.
    webhook_concurrency: int = 32
    # Webhooks to private, loopback, link-local, CGNAT or reserved addresses are refused
    # (checked on the address connected to, after DNS) unless allowed: all of them, or
    # the networks listed (comma-separated CIDRs, `10.20.0.0/16,fd00::/8`).
    webhooks_allow_private: bool = False
    webhooks_allow_cidrs: str = ""
    # Sends are checked against their WABA's templates before they are stored (Meta's
    # 132001, 132000, 132015... at once); 0 leaves every template check to the upstream.
    template_checks: bool = True
    # A WABA's templates are listed from the upstream again this long after the last
    # listing (Meta's template webhooks keep them current in between).
    template_refresh_seconds: float = 300.0
    # After a send names a template the gateway does not hold (or holds not approved yet),
    # its WABA is listed again, but at most once per this many seconds.
    template_miss_seconds: float = 30.0
    # The embedded sandbox: "1" always served, "0" never (sandbox numbers refused),
    # unset: served while at least one sandbox number exists.
    sandbox: str = ""

    def __post_init__(self) -> None:
        # Absolute at once: a later chdir, or a command run from another directory,
        # must name the same file in what it prints.
        data_dir = os.path.abspath(os.path.expanduser(self.data_dir))
        object.__setattr__(self, "data_dir", data_dir)
        if not self.database_url:
            object.__setattr__(self, "database_url", default_database_url(data_dir))

    @property
    def database_is_default(self) -> bool:
        """Whether the database is the default file under WAGATE_DATA_DIR."""
        return self.database_url == default_database_url(self.data_dir)

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
            if kind is bool:
                if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise SystemExit(f"WAGATE_{f.name.upper()}={raw!r} is not a boolean (1 or 0)")
                values[f.name] = raw.lower() in ("1", "true", "yes")
                continue
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise SystemExit(
                    f"WAGATE_{f.name.upper()}={raw!r} is not a valid {kind.__name__}"
                ) from None
        settings = cls(**values)  # type: ignore[arg-type]
        settings.sandbox_mode()  # a bad WAGATE_SANDBOX stops the process now
        settings.webhook_allowed_networks()  # so does a bad CIDR
        if settings.webhook_concurrency < 1:
            raise SystemExit(
                f"WAGATE_WEBHOOK_CONCURRENCY={settings.webhook_concurrency} must be at least 1"
            )
        if settings.webhook_pause_after_seconds < 0:
            raise SystemExit(
                f"WAGATE_WEBHOOK_PAUSE_AFTER_SECONDS={settings.webhook_pause_after_seconds} "
                "is negative (0 never pauses)"
            )
        if settings.retention_days < 0:
            raise SystemExit(
                f"WAGATE_RETENTION_DAYS={settings.retention_days} is negative (0 keeps everything)"
            )
        if settings.sqlite_synchronous.upper() not in SQLITE_SYNCHRONOUS:
            raise SystemExit(
                f"WAGATE_SQLITE_SYNCHRONOUS={settings.sqlite_synchronous!r} is not one of "
                + ", ".join(SQLITE_SYNCHRONOUS)
            )
        return settings

    def sandbox_mode(self) -> Literal["auto", "on", "off"]:
        """WAGATE_SANDBOX as one of auto (unset), on (1) or off (0)."""
        value = self.sandbox.strip().lower()
        if value in ("", "auto"):
            return "auto"
        if value in ("1", "true", "yes", "on"):
            return "on"
        if value in ("0", "false", "no", "off"):
            return "off"
        raise SystemExit(f"WAGATE_SANDBOX={self.sandbox!r} is not 1, 0 or unset")

    def webhook_allowed_networks(self) -> tuple[Network, ...]:
        """WAGATE_WEBHOOKS_ALLOW_CIDRS as networks (host bits of `10.0.0.1/8` are dropped)."""
        networks: list[Network] = []
        for cidr in self.webhooks_allow_cidrs.split(","):
            if not cidr.strip():
                continue
            try:
                networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
            except ValueError:
                raise SystemExit(
                    f"WAGATE_WEBHOOKS_ALLOW_CIDRS: {cidr.strip()!r} is not a network "
                    "(an address or a CIDR such as 10.20.0.0/16)"
                ) from None
        return tuple(networks)

    def upstream_base(self, upstream: str) -> str:
        """The Graph API base URL for a number's upstream kind."""
        if upstream == "meta":
            return self.meta_base_url
        return self.sandbox_url or f"{self.public_url or 'http://127.0.0.1:8080'}/sandbox"
