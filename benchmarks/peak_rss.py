"""Runs a command and writes its peak resident memory as JSON: `peak_rss.py OUT.json -- COMMAND...`.

Linux carries a process's peak RSS (ru_maxrss) across fork and exec, so a child started
straight from a large process (the benchmark, with TensorFlow and data loaded) reports at
least the parent's size. This launcher is a small Python process: its child inherits only
its few MB, and wait4() gives that child's own peak. It imports nothing heavy on purpose.

A command that trains folds in child processes has several processes alive at once, and
wait4() reports only the largest of them; so a thread also samples the whole process tree
(psutil) every 0.1 s: the summed RSS (peak_tree_rss_mb, which counts pages that several
processes map, such as the memory-mapped image cache, once per process) and the summed PSS
(peak_tree_pss_mb, which shares such pages out among them: the memory the machine spent).
"""

import json
import os
import resource
import subprocess
import sys
import threading

SAMPLE_S = 0.1


def sample_tree(pid: int, peak: list, stop: threading.Event) -> None:
    """Keeps the largest summed RSS (peak[0]) and PSS (peak[1]) of the process `pid` and its descendants, in MB."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return
    while not stop.wait(SAMPLE_S):
        rss = pss = 0
        try:
            for process in [root, *root.children(recursive=True)]:
                try:
                    memory = process.memory_full_info()
                except psutil.Error:
                    continue
                rss += memory.rss
                pss += getattr(memory, "pss", memory.rss)
        except psutil.Error:
            return
        peak[0] = max(peak[0], rss / 1024.0**2)
        peak[1] = max(peak[1], pss / 1024.0**2)


def main() -> int:
    out, separator, *command = sys.argv[1:]
    if separator != "--" or not command:
        print("usage: peak_rss.py OUT.json -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    process = subprocess.Popen(command)
    peak, stop = [0.0, 0.0], threading.Event()
    sampler = threading.Thread(target=sample_tree, args=(process.pid, peak, stop), daemon=True)
    sampler.start()
    _, status, usage = os.wait4(process.pid, 0)
    stop.set()
    sampler.join(timeout=2)
    process.returncode = returncode = os.waitstatus_to_exitcode(status)
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(
            {
                "peak_rss_mb": usage.ru_maxrss / 1024.0,  # ru_maxrss is in KiB on Linux.
                "peak_tree_rss_mb": peak[0],
                "peak_tree_pss_mb": peak[1],
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "returncode": returncode,
                "launcher_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            },
            handle,
        )
    return returncode if returncode >= 0 else 128 - returncode


if __name__ == "__main__":
    sys.exit(main())
