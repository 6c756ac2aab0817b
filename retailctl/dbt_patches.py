"""One measured cost of dbt's start-up that retailctl removes, without changing what dbt does.

dbt-common names the source of each adapter behaviour flag (for a deprecation message) with
`inspect.stack()`, which reads the source lines of every frame on the stack and maps each frame
to its module by scanning `sys.modules`: 3 or 4 flags per dbt invocation, ~80 ms of each
`retailctl` invocation of dbt (2,000 modules loaded), and 2.4 MB of source lines left in
`linecache` for the rest of the process. The name comes from the frames' globals alone here:
the same answer (tests/test_footprint.py compares the two), without reading a file.
"""

from __future__ import annotations

import sys
import threading

_OWN_MODULE = "dbt_common.behavior_flags"
_lock = threading.Lock()


def _default_source() -> str:
    """The first module on the stack other than dbt-common's behavior_flags, as dbt-common's
    `_default_source` answers it."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__")
        if name and name != _OWN_MODULE:
            return str(name)
        frame = frame.f_back
    return "Unknown"


def apply() -> None:
    """Replace the slow lookup, once; a dbt-common without it (renamed, moved) is left as it is."""
    try:
        from dbt_common.behavior_flags import BehaviorFlagRendered
    except ImportError:
        return
    with _lock:
        current = BehaviorFlagRendered.__dict__.get("_default_source")
        if isinstance(current, staticmethod) and current.__func__ is not _default_source:
            BehaviorFlagRendered._default_source = staticmethod(_default_source)  # type: ignore[method-assign]
