"""The sandbox: an emulator of the parts of Meta's Graph API that the gateway uses.

Standalone: `python -m wagate.adapters.sandbox --port 9000` (or `run_sandbox(...)`).
Inside another server: `create_sandbox_app(config, prefix="/sandbox")` is an ASGI app;
call its `startup()` and `aclose()` when the host server gives it no lifespan.
"""

from __future__ import annotations

from wagate.adapters.sandbox.app import SandboxApp, create_sandbox_app, sandbox_app_from_env
from wagate.adapters.sandbox.config import SandboxConfig
from wagate.adapters.sandbox.server import run_sandbox
from wagate.adapters.sandbox.state import SandboxState
from wagate.adapters.sandbox.webhooks import signature

__all__ = [
    "SandboxApp",
    "SandboxConfig",
    "SandboxState",
    "create_sandbox_app",
    "run_sandbox",
    "sandbox_app_from_env",
    "signature",
]
