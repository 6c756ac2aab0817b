"""What keeps retailctl's processes small and quick to start and to end: each check runs in a
fresh interpreter, as the CLI does, so modules other tests imported cannot hide an import, and
dbt-common is patched only where the check asks for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# A module that builds behaviour flags as an adapter's impl.py does: one flag without a source
# (dbt-common names its caller), one with.
ADAPTER_MODULE = """\
from dbt_common.behavior_flags import Behavior

FLAGS = [
    {"name": "one", "default": False, "description": "d"},
    {"name": "two", "default": True, "docs_url": "u", "source": "given"},
]


def make():
    return Behavior(FLAGS, {})
"""
# The source name each flag got, and how many source files linecache read meanwhile.
FLAG_SOURCES = """\
import json, linecache, sys
if sys.argv[1] == "patched":
    from retailctl import dbt_patches
    dbt_patches.apply()
import fake_adapter_impl
linecache.clearcache()
behavior = fake_adapter_impl.make()
sources = [flag._behavior_change_event.flag_source for flag in behavior._flags]
print(json.dumps({"sources": sources, "files_read": len(linecache.cache)}))
"""
APPLY_TWICE = """\
from dbt_common.behavior_flags import BehaviorFlagRendered
from retailctl import dbt_patches
dbt_patches.apply()
first = BehaviorFlagRendered.__dict__["_default_source"]
dbt_patches.apply()
again = BehaviorFlagRendered.__dict__["_default_source"]
print(again is first, first.__func__ is dbt_patches._default_source)
"""
# main() ends with gc.freeze() (the interpreter's shutdown then skips its full collections); the
# exit code and the output are the command's, and atexit handlers still run after it.
FROZEN_AT_EXIT = """\
import atexit, gc, sys
from retailctl.cli import main
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0))
sys.argv = ["retailctl", *sys.argv[1:]]
main()
"""
# main() freezes the CLI's modules before the command runs (its collections skip them).
FROZEN_AT_START = """\
import gc, sys
import retailctl.cli
cli = sys.modules["retailctl.cli.app"]
cli.app = lambda: print("frozen at start:", gc.get_freeze_count() > 0)
cli.main()
"""
# Garbage collections while dbt is imported, plain or through gold's import, and what is left
# after it: the collector's state and how many objects were frozen.
DBT_IMPORT = """\
import gc, importlib, json, sys
from retailctl import gold
collections = []
gc.callbacks.append(lambda phase, info: phase == "start" and collections.append(info["generation"]))
if sys.argv[1] == "gold":
    gold._import_dbt()
    gold._import_dbt()  # again: nothing more to import or freeze
else:
    importlib.import_module("dbt.cli.main")
state = {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}
print(json.dumps({"collections": len(collections), **state}))
"""
HTTP_MODULES = """\
import sys
import retailctl.cli, retailctl.gold, retailctl.status
print(sorted(name for name in sys.modules if name.split(".")[0] in ("httpx", "httpcore")))
"""

# What an extracting run-all imports for HTTP, through main() as the CLI runs it.
EXTRACT_IMPORTS = """\
import json, sys
import retailctl.cli
cli = sys.modules["retailctl.cli.app"]

def extract_imports():
    import retailctl.extract.source
    import httpx
    print(json.dumps({
        "cli_deps": sorted(n for n in ("click", "pygments", "httpx._main") if sys.modules.get(n) is not None),
        "client": httpx.Client.__name__,
    }))

cli.app = extract_imports
cli.main()
"""


def python(script: str, *args: str, path: Path | None = None) -> str:
    """stdout of `script` in a fresh interpreter, with `path` first on its module path."""
    paths = [str(path)] if path else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-c", script, *args]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=120, env=env).stdout


def test_patched_behaviour_flags_name_the_same_source_without_reading_any_file(tmp_path: Path) -> None:
    (tmp_path / "fake_adapter_impl.py").write_text(ADAPTER_MODULE)
    original = json.loads(python(FLAG_SOURCES, "original", path=tmp_path))
    patched = json.loads(python(FLAG_SOURCES, "patched", path=tmp_path))
    assert original["sources"] == patched["sources"] == ["fake_adapter_impl", "given"]
    assert original["files_read"] > 0  # the cost the patch removes: inspect.stack() reads source
    assert patched["files_read"] == 0


def test_apply_twice_keeps_one_replacement() -> None:
    assert python(APPLY_TWICE).split() == ["True", "True"]


def test_main_freezes_the_cli_modules_before_the_command_runs() -> None:
    assert python(FROZEN_AT_START).splitlines() == ["frozen at start: True"]


def test_dbt_is_imported_without_garbage_collections_and_frozen_after() -> None:
    plain, gold = json.loads(python(DBT_IMPORT, "plain")), json.loads(python(DBT_IMPORT, "gold"))
    assert plain["collections"] > 0 and plain["frozen"] == 0  # the cost: collections mid-import
    assert gold["collections"] == 0
    assert gold["enabled"] is True
    assert gold["frozen"] > 100_000  # dbt's objects, skipped by every later collection


def test_the_cli_imports_no_http_client_until_it_extracts() -> None:
    """httpx is ~4 MB of the dbt steps' peak memory: `transform` and `test` never import it."""
    assert python(HTTP_MODULES).strip() == "[]"


def test_main_freezes_the_heap_before_the_interpreter_shuts_down() -> None:
    version = subprocess.run(
        [sys.executable, "-c", FROZEN_AT_EXIT, "--version"], capture_output=True, text=True, timeout=120
    )
    assert version.returncode == 0
    assert version.stdout.splitlines()[-1] == "frozen at exit: True"
    assert version.stdout.splitlines()[0].startswith("retailctl ")
    unknown = subprocess.run(
        [sys.executable, "-c", FROZEN_AT_EXIT, "no-such-command"], capture_output=True, text=True, timeout=120
    )
    assert unknown.returncode == 2  # a usage error keeps its exit code
    assert unknown.stdout.splitlines() == ["frozen at exit: True"]


def test_extracting_imports_httpx_without_its_command_line() -> None:
    """httpx's own CLI (click, pygments) is ~17 ms of every extracting process's start."""
    assert json.loads(python(EXTRACT_IMPORTS)) == {"cli_deps": [], "client": "Client"}
