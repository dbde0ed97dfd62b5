"""docs/production-check: the PostgreSQL steps of docs/production.md work on this machine.

Two API processes, two workers, the standalone sandbox in Meta's place, a project,
key and number made with the CLI, and a message through each API process read
back delivered; the script removes its processes and its database.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, require_postgres

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SCRIPT = ROOT / "docs" / "production-check"


def test_the_production_guide_s_postgresql_steps_reach_delivered_messages() -> None:
    require_postgres()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAGATE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    result = subprocess.run(
        [str(SCRIPT)], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    said = result.stdout + result.stderr
    assert result.returncode == 0, said
    assert "production-check: ok (2 API processes, 2 workers, 2 messages delivered" in said
    assert said.count(": read\n") + said.count(": delivered\n") == 2, said
    assert "Traceback" not in said
