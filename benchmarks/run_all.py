"""Run every ``benchmarks/bench_*.py`` in turn (what ``make bench`` calls)."""

from __future__ import annotations

import runpy
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    sys.path.insert(0, str(HERE))
    scripts = sorted(HERE.glob("bench_*.py"))
    only = set(sys.argv[1:])
    for script in scripts:
        if only and script.stem not in only:
            continue
        start = time.perf_counter()
        print(f"\n### {script.name}")
        runpy.run_path(str(script), run_name="__main__")
        print(f"### {script.name} took {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
