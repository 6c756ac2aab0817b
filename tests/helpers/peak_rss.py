"""Run a module as __main__ and write this process's peak RSS (VmHWM, kB) to $PEAK_RSS_FILE.

VmHWM counts this program's own memory (wait4's ru_maxrss would carry the parent's over fork
and exec). Written at exit, whatever the exit code: after the last allocation, so no peak is
missed between polls.
"""

import atexit
import os
import runpy
import sys


def _write_peak() -> None:
    with open("/proc/self/status") as status:
        peak_kb = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(os.environ["PEAK_RSS_FILE"], "w") as out:
        out.write(peak_kb)


atexit.register(_write_peak)
module = sys.argv[1]
sys.argv = [module, *sys.argv[2:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
