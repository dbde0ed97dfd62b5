"""The sandbox's settings, and how they are read from the environment of a standalone server."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from wagate.domain.pacing import PAIR_BURST, PAIR_INTERVAL_S

ENV_PREFIX = "WAGATE_SANDBOX_"


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """How the emulated Graph API behaves: limits, delays and where status webhooks go."""

    # Meta's per-number throughput in messages/s: 80 by default, 1,000 after an upgrade.
    mps: float = 80.0
    webhook_url: str | None = None
    app_secret: str = ""
    # Seconds between accept -> sent -> delivered -> read.
    status_delay: float = 0.5
    # Seconds a created template stays PENDING before it is APPROVED.
    approval_delay: float = 5.0
    # Meta's pair rate limit: bursts up to 45 messages to one user, then about 1 per 6 s.
    pair_burst: int = PAIR_BURST
    pair_interval: float = PAIR_INTERVAL_S
    # Meta batches up to 1,000 updates into one webhook POST.
    webhook_batch: int = 1000
    flush_interval: float = 0.05
    webhook_retries: int = 3
    webhook_backoff: float = 0.5
    webhook_timeout: float = 10.0
    # phone_number_id -> waba_id; a number not listed is a WABA of its own.
    numbers: Mapping[str, str] = field(default_factory=dict)
    # Bearer token of the operator routes (/_stats, /_sends, /_reset, /_numbers, /_templates);
    # "" refuses them.
    admin_token: str = ""
    # Standalone only: the one access token every number and WABA accepts. "" binds
    # each number and WABA to the first token that uses it.
    token: str = ""
    # Embedded only: seconds a sandbox number's replaced access token is still accepted
    # after `wagate numbers update` rotates it (Meta keeps an old token valid until it
    # is revoked), so sends claimed with the old token still go through.
    token_grace: float = 10.0
    # Bounds on what clients can make the sandbox remember. Meta caps a WABA at 250
    # templates; the rest keep a misbehaving client from growing memory without end.
    max_numbers: int = 10_000
    max_wabas: int = 10_000
    max_templates_per_waba: int = 250
    max_created_templates: int = 10_000
    # Sends remembered for duplicate detection and transient failures (least recent forgotten).
    max_remembered_sends: int = 100_000
    # Status updates waiting for their time; beyond it sends are refused with 131016.
    max_pending_updates: int = 200_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SandboxConfig:
        """Read `WAGATE_SANDBOX_*` variables; an unset variable keeps the default."""
        env = os.environ if environ is None else environ
        default = cls()

        def get(name: str) -> str | None:
            value = env.get(ENV_PREFIX + name)
            return value if value not in (None, "") else None

        def number(name: str, fallback: float) -> float:
            raw = get(name)
            try:
                return fallback if raw is None else float(raw)
            except ValueError:
                raise SystemExit(f"{ENV_PREFIX}{name}={raw!r} is not a number") from None

        def integer(name: str, fallback: int) -> int:
            raw = get(name)
            try:
                return fallback if raw is None else int(raw)
            except ValueError:
                raise SystemExit(f"{ENV_PREFIX}{name}={raw!r} is not a whole number") from None

        try:
            numbers = parse_numbers(get("NUMBERS") or "")
        except ValueError as exc:
            raise SystemExit(f"{ENV_PREFIX}NUMBERS: {exc}") from None

        return cls(
            mps=number("MPS", default.mps),
            webhook_url=get("WEBHOOK_URL"),
            app_secret=get("APP_SECRET") or "",
            status_delay=number("STATUS_DELAY", default.status_delay),
            approval_delay=number("APPROVAL_DELAY", default.approval_delay),
            pair_burst=integer("PAIR_BURST", default.pair_burst),
            pair_interval=number("PAIR_INTERVAL", default.pair_interval),
            webhook_batch=integer("WEBHOOK_BATCH", default.webhook_batch),
            flush_interval=number("FLUSH_INTERVAL", default.flush_interval),
            webhook_retries=integer("WEBHOOK_RETRIES", default.webhook_retries),
            webhook_backoff=number("WEBHOOK_BACKOFF", default.webhook_backoff),
            webhook_timeout=number("WEBHOOK_TIMEOUT", default.webhook_timeout),
            numbers=numbers,
            admin_token=get("ADMIN_TOKEN") or env.get("WAGATE_ADMIN_TOKEN") or "",
            token=get("TOKEN") or "",
            token_grace=number("TOKEN_GRACE", default.token_grace),
        )

    def to_env(self) -> dict[str, str]:
        """The `WAGATE_SANDBOX_*` variables that `from_env` reads back into this config."""
        env = {
            "MPS": repr(self.mps),
            "APP_SECRET": self.app_secret,
            "STATUS_DELAY": repr(self.status_delay),
            "APPROVAL_DELAY": repr(self.approval_delay),
            "PAIR_BURST": str(self.pair_burst),
            "PAIR_INTERVAL": repr(self.pair_interval),
            "WEBHOOK_BATCH": str(self.webhook_batch),
            "FLUSH_INTERVAL": repr(self.flush_interval),
            "WEBHOOK_RETRIES": str(self.webhook_retries),
            "WEBHOOK_BACKOFF": repr(self.webhook_backoff),
            "WEBHOOK_TIMEOUT": repr(self.webhook_timeout),
            "WEBHOOK_URL": self.webhook_url or "",
            "NUMBERS": ",".join(f"{pnid}:{waba}" for pnid, waba in self.numbers.items()),
            "ADMIN_TOKEN": self.admin_token,
            "TOKEN": self.token,
            "TOKEN_GRACE": repr(self.token_grace),
        }
        return {ENV_PREFIX + name: value for name, value in env.items()}


def parse_numbers(text: str) -> dict[str, str]:
    """`"pnid:waba,pnid2:waba2"` as a mapping phone_number_id -> waba_id."""
    numbers: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        pnid, sep, waba = item.partition(":")
        if not sep or not pnid.strip() or not waba.strip():
            raise ValueError(f"expected phone_number_id:waba_id, got {item!r}")
        numbers[pnid.strip()] = waba.strip()
    return numbers
