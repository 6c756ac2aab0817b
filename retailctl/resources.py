"""Find the SQL migrations and the dbt project, installed or in a source checkout."""

from __future__ import annotations

from pathlib import Path

from retailctl.errors import RetailctlError

PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """`schema` or `dbt`: shipped in the wheel as `retailctl/_<name>`, top level in a checkout."""
    for candidate in (PACKAGE_DIR / f"_{name}", PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise RetailctlError(f"the packaged {name}/ directory is missing: reinstall retailctl")
