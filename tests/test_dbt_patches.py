"""What keeps the dbt steps small: checked in a fresh interpreter, as the CLI runs, so modules
other tests imported cannot hide an import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HTTP_MODULES = """\
import sys
import retailctl.cli, retailctl.gold, retailctl.status
print(sorted(name for name in sys.modules if name.split(".")[0] in ("httpx", "httpcore")))
"""


def python(script: str, *args: str, path: Path | None = None) -> str:
    """stdout of `script` in a fresh interpreter, with `path` first on its module path."""
    paths = [str(path)] if path else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-c", script, *args]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=120, env=env).stdout


def test_the_cli_imports_no_http_client_until_it_extracts() -> None:
    """httpx is ~4 MB of the dbt steps' peak memory: `transform` and `test` never import it."""
    assert python(HTTP_MODULES).strip() == "[]"
