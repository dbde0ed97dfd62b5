"""The sandbox: an emulator of the parts of Meta's Graph API that the gateway uses.

Standalone: `python -m wagate.adapters.sandbox --port 9000` (or `run_sandbox(...)`).
Inside another server: `create_sandbox_app(config, prefix="/sandbox")` is an ASGI app;
call its `startup()` and `aclose()` when the host server gives it no lifespan.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# Each name's module, imported on first use: `wagate serve` reads only the config (a
# mistake in it stops the start in one line) before granian starts the app, and importing
# the app (Litestar and all) for that cost every start ~0.3 s of CPU.
_MODULES = {
    "SandboxApp": "app",
    "create_sandbox_app": "app",
    "sandbox_app_from_env": "app",
    "SandboxConfig": "config",
    "run_sandbox": "server",
    "SandboxState": "state",
    "signature": "webhooks",
}


def __getattr__(name: str) -> Any:
    """The public name `name`, from the module that defines it."""
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
