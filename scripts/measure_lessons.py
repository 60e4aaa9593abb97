"""Does each lesson fit Binder (1 CPU, 2 GB)? Run each on one core; report time and peak memory.

Usage: python scripts/measure_lessons.py [lessons/NN_name.ipynb ...]   (default: all lessons)
Each lesson runs in a fresh process pinned to CPU 0 (taskset -c 0) with torch limited to one
thread; peak memory is the kernel's maximum resident set size, end memory what it still holds
after the last cell (a kernel keeps it until it is shut down, and Binder's 2 GB is for all the
kernels open together). Limits: 60 s and 1.5 GB.
CPU seconds (the kernel's user + system time) are printed beside wall seconds: on a busy shared
machine wall time inflates, CPU time much less.
Exits non-zero if a lesson is over either limit.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT_S, LIMIT_MB = 60.0, 1536.0

# One more cell after the lesson's last: what the kernel still holds when the lesson is done
# (a kernel stays alive, with its memory, until it is shut down).
END_CELL = """import gc
gc.collect()
rss = [line for line in open("/proc/self/status") if line.startswith("VmRSS")]
print(int(rss[0].split()[1]) / 1024 if rss else -1)"""

CHILD = """
import json, resource, sys
from pathlib import Path
import nbformat
sys.path.insert(0, {scripts!r})
from execute_lessons import execute
nb = nbformat.read({src!r}, as_version=4)
nb.cells.append(nbformat.v4.new_code_cell({end_cell!r}))
nbformat.write(nb, {dst!r})
seconds = execute(Path({dst!r}), cwd=Path({src!r}).parent)
end_mb = float(nbformat.read({dst!r}, as_version=4).cells[-1].outputs[0]["text"])
# The kernel was a child of this process and has been reaped: its peak RSS is counted here.
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({{"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
                  "peak_mb": usage.ru_maxrss / 1024, "end_mb": end_mb}}))
"""


def measure(path: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / path.name
        code = CHILD.format(scripts=str(ROOT / "scripts"), src=str(path), dst=str(dst),
                            end_cell=END_CELL)
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code],
                             capture_output=True, text=True, env=env, cwd=path.parent)
        if out.returncode:
            raise RuntimeError(f"{path.name} failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    paths = [Path(p).resolve() for p in sys.argv[1:]] or sorted(
        (ROOT / "lessons").glob("[0-9]*.ipynb"))
    print(f"{'lesson':<32} {'seconds':>8} {'CPU s':>6} {'peak MB':>8} {'end MB':>7}  within "
          f"Binder (1 CPU, {LIMIT_S:.0f} s, {LIMIT_MB:.0f} MB)?")
    ok = True
    for p in paths:
        r = measure(p)
        fits = r["seconds"] < LIMIT_S and r["peak_mb"] < LIMIT_MB
        ok &= fits
        print(f"{p.name:<32} {r['seconds']:8.1f} {r['cpu_seconds']:6.1f} {r['peak_mb']:8.0f} "
              f"{r['end_mb']:7.0f}  "
              f"{'yes' if fits else 'NO'}",
              flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
