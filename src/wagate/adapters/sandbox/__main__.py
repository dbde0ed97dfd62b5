"""`python -m wagate.adapters.sandbox`: serve the sandbox standalone with granian."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from wagate.adapters.sandbox.config import parse_numbers
from wagate.adapters.sandbox.server import run_sandbox


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(
        prog="python -m wagate.adapters.sandbox",
        description="An emulator of Meta's Graph API for WhatsApp marketing messages.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--mps", type=float, help="throughput per phone number (default 80)")
    parser.add_argument("--webhook-url", help="where status and template webhooks are POSTed")
    parser.add_argument("--app-secret", help="key of the X-Hub-Signature-256 HMAC")
    parser.add_argument("--status-delay", type=float, help="seconds between status updates")
    parser.add_argument("--approval-delay", type=float, help="seconds until a template approves")
    parser.add_argument("--pair-burst", type=int, help="messages to one user before 131056")
    parser.add_argument("--pair-interval", type=float, help="seconds per message to one user")
    parser.add_argument("--numbers", help="phone_number_id:waba_id pairs, comma-separated")
    parser.add_argument(
        "--admin-token",
        help="bearer token of /_stats, /_sends, /_reset, /_numbers, /_templates (default"
        " WAGATE_ADMIN_TOKEN; unset: refused)",
    )
    parser.add_argument(
        "--token",
        help="the one access token every number and WABA accepts (default: each is bound"
        " to the first token that uses it)",
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    run_sandbox(
        args.host,
        args.port,
        args.mps,
        args.webhook_url,
        args.app_secret,
        status_delay=args.status_delay,
        approval_delay=args.approval_delay,
        pair_burst=args.pair_burst,
        pair_interval=args.pair_interval,
        numbers=parse_numbers(args.numbers) if args.numbers else None,
        admin_token=args.admin_token,
        token=args.token,
        log_level=args.log_level,
    )


if __name__ == "__main__":
    main()
