"""Helpers shared by the benchmarks: child processes with wall time and peak memory, tables."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


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
