"""Runs a command and writes its peak resident memory as JSON: `peak_rss.py OUT.json -- COMMAND...`.

Linux carries a process's peak RSS (ru_maxrss) across fork and exec, so a child started
straight from a large process (the benchmark, with TensorFlow and data loaded) reports at
least the parent's size. This launcher is a small Python process: its child inherits only
its few MB, and wait4() gives that child's own peak. It imports nothing heavy on purpose.
"""

import json
import os
import resource
import subprocess
import sys


def main() -> int:
    out, separator, *command = sys.argv[1:]
    if separator != "--" or not command:
        print("usage: peak_rss.py OUT.json -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = returncode = os.waitstatus_to_exitcode(status)
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(
            {
                "peak_rss_mb": usage.ru_maxrss / 1024.0,  # ru_maxrss is in KiB on Linux.
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "returncode": returncode,
                "launcher_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            },
            handle,
        )
    return returncode if returncode >= 0 else 128 - returncode


if __name__ == "__main__":
    sys.exit(main())
