"""Helpers shared by the benchmarks: child processes with wall time and peak memory, tables."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

# Code a benchmark child starts with: `phases(name)` marks a phase whose exact peak RSS it records
# (Linux resets a process's high-water mark VmHWM when "5" is written to /proc/self/clear_refs);
# `marked` wraps a function as a phase; `watchdog()` stops the child before the machine runs out.
PHASES = r"""
import ctypes, json, re, sys, tempfile, time
from contextlib import contextmanager
from dataclasses import replace


def rss_mb(field):
    status = open("/proc/self/status").read()
    return int(re.search(field + r":\s+(\d+)", status).group(1)) / 1024


class MallInfo(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo


def malloc_free_mb():
    # bytes glibc's heaps hold free (not returned to the system): fragmentation, summed over arenas
    return libc.mallinfo2().fordblks / 2**20


class Phases:
    # Exact peak RSS per phase: the high-water mark is reset when a phase starts or resumes.
    # At each phase's end: its RSS and the free memory the allocator keeps.
    def __init__(self):
        self.stack, self.peak, self.count, self.seconds = [], {}, {}, {}
        self.end_rss, self.end_free = {}, {}

    def _close_segment(self):
        if self.stack:
            name = self.stack[-1][0]
            self.peak[name] = max(self.peak.get(name, 0.0), rss_mb("VmHWM"))
            self.end_rss[name] = rss_mb("VmRSS")
            self.end_free[name] = malloc_free_mb()
        open("/proc/self/clear_refs", "w").write("5")

    @contextmanager
    def __call__(self, name):
        self._close_segment()
        self.stack.append((name, time.perf_counter()))
        self.count[name] = self.count.get(name, 0) + 1
        try:
            yield
        finally:
            self._close_segment()
            _, start = self.stack.pop()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            print(f"phase {name}: peak {self.peak[name]:.0f} MB so far, RSS {self.end_rss[name]:.0f}"
                  f" MB, malloc free {self.end_free[name]:.0f} MB", file=sys.stderr, flush=True)



phases = Phases()


def marked(owner, attr, name):
    original = getattr(owner, attr)

    def wrapper(*args, **kwargs):
        label = name(args, kwargs) if callable(name) else name
        with phases(label):
            return original(*args, **kwargs)
    setattr(owner, attr, wrapper)


def watchdog(floor_mb=2000):
    # a benchmark must not push a shared machine into the OOM killer: stop first
    import os, threading, psutil

    def watch():
        while True:
            if psutil.virtual_memory().available < floor_mb * 2**20:
                print("benchmark: the machine has under", floor_mb, "MB free; stopping",
                      file=sys.stderr, flush=True)
                os._exit(3)
            time.sleep(0.2)
    threading.Thread(target=watch, daemon=True).start()


"""


def run_child(code: str, *args: str, env: dict | None = None, quiet: bool = True) -> dict:
    """Run `python -c code args…`; return wall seconds, peak RSS (MB) and the JSON it prints last
    (its stderr is dropped, or passed through with `quiet=False`)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL if quiet else None, text=True,
                            env=dict(os.environ, HF_HUB_OFFLINE="1", **(env or {})))
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"child failed ({status}); output tail: {out[-2000:]}")
    payload = json.loads(out.strip().splitlines()[-1])
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, **payload}


def save(name: str, data: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def table(rows: list[list], header: list[str]) -> str:
    cols = [header] + [[f"{c:.3g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cols) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cols[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *map(line, cols[1:])])
