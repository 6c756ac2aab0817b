"""Run a module as __main__ and write this process's peak RSS (VmHWM) to $PEAK_RSS_FILE at exit.

VmHWM counts only this program's own memory: unlike wait4's ru_maxrss, which Linux carries over
from the parent across fork and exec, so a big benchmark parent would inflate every child's figure.
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
