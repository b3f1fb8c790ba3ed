"""Parallel efficiency and first-call latency of lcnumba on the DESIGN section 6 workloads.

Two measurements, one Markdown report:

1. **Threads.** Each workload's forward+backward (``out=`` buffers, the
   calls of ``compare.py``) is timed with 1 thread and with ``--threads``
   threads (default: all cores), switching ``numba.set_num_threads``
   round by round in one process, so both counts see the same machine.
   The speedup column is ``time(1 thread) / time(n threads)``.
2. **First call.** For every operation family a fresh Python process
   imports lcnumba and makes its first forward+backward on small inputs; the
   process reports both durations and its CPU time (user+sys: compiling is
   single-threaded, so on a busy machine CPU time is the steadier figure).
   By default the cache is warmed first (``python -m lcnumba warmup``).
   ``--cold-cache`` reports the three first-use figures instead: each
   family's first call compiling into an empty cache (a new one per family),
   ``python -m lcnumba warmup`` (every op, both dtypes) into an empty cache,
   and then import plus first call in a new process on that warm cache.

    python benchmarks/scaling.py                  # both, all workloads
    python benchmarks/scaling.py --workloads deepface_l4,vgg_conv3 --skip-first-call
    python benchmarks/scaling.py --cold-cache --skip-threads  # the first-use figures alone
"""

import os
import sys

if __name__ == "__main__":
    # Passive OpenMP waiting, as in compare.py: idle threads of one run must not slow the next.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import resource
import shutil
import statistics
import subprocess
import tempfile
import time

import numpy as np

try:
    from .compare import Device, build_lcnumba
    from .workloads import WORKLOADS
except ImportError:  # run as a script: benchmarks/ is sys.path[0]
    from compare import Device, build_lcnumba
    from workloads import WORKLOADS

#: One small first call per family, run in a fresh process: (label, statement).
FIRST_CALLS = (
    ("conv2d fwd+bwd", "x = np.ones((1, 2, 6, 6), np.float32); w = np.ones((2, 2, 3, 3), np.float32); "
                       "lcnumba.conv2d_backward(lcnumba.conv2d_forward(x, w), x, w)"),
    ("tiled_conv2d fwd+bwd", "x = np.ones((1, 2, 6, 6), np.float32); w = np.ones((2, 2, 2, 2, 3, 3), np.float32); "
                             "lcnumba.tiled_conv2d_backward(lcnumba.tiled_conv2d_forward(x, w), x, w)"),
    ("local_conv2d fwd+bwd", "x = np.ones((1, 2, 6, 6), np.float32); w = np.ones((4, 4, 2, 2, 3, 3), np.float32); "
                             "lcnumba.local_conv2d_backward(lcnumba.local_conv2d_forward(x, w), x, w)"),
    ("max_pool2d fwd+bwd", "x = np.ones((1, 2, 6, 6), np.float32); "
                           "y, i = lcnumba.max_pool2d_forward(x, 2, return_indices=True); "
                           "lcnumba.max_pool2d_backward(y, i, x.shape)"),
    ("netvlad fwd+bwd", "x = np.ones((1, 4, 3, 3), np.float32); w = np.ones((2, 4), np.float32); "
                        "b = np.zeros(2, np.float32); c = np.ones((2, 4), np.float32); "
                        "lcnumba.netvlad_backward(lcnumba.netvlad_forward(x, w, b, c), x, w, b, c)"),
)

_CHILD = """
import time
t0 = time.perf_counter()
import numpy as np
import lcnumba
t1 = time.perf_counter()
{statement}
t2 = time.perf_counter()
print(t1 - t0, t2 - t1, time.process_time())
"""


def time_threads(names, threads, budget, min_repeat):
    """Rows ``(workload, ms at 1 thread, ms at n threads)``, medians, interleaved round by round."""
    import numba

    device = Device("cpu")
    rows = []
    for name in names:
        wl = WORKLOADS[name]
        impl = build_lcnumba(wl, wl.make_inputs(np.float32), device, prealloc=True)
        times = {1: [], threads: []}
        for count in times:  # warm-up: compile and fault in the buffers
            numba.set_num_threads(count)
            impl.forward_backward()
        end = time.perf_counter() + budget
        while time.perf_counter() < end or len(times[1]) < min_repeat:
            for count in times:
                numba.set_num_threads(count)
                start = time.perf_counter()
                impl.forward_backward()
                times[count].append(time.perf_counter() - start)
        numba.set_num_threads(threads)
        rows.append((name, 1e3 * statistics.median(times[1]), 1e3 * statistics.median(times[threads])))
        print(f"[{name}] {len(times[1])} rounds", file=sys.stderr)
    return rows


def _first_call(statement, env):
    """``(import s, first-call s, CPU s)`` of ``statement`` in a fresh process."""
    done = subprocess.run([sys.executable, "-c", _CHILD.format(statement=statement)], check=True, env=env,
                          capture_output=True, text=True)
    imported, called, cpu = (float(v) for v in done.stdout.split())
    return imported, called, cpu


def _warmup(env):
    """``(wall s, CPU s of every process)`` of ``python -m lcnumba warmup`` (every op, both dtypes)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lcnumba", "warmup", "--quiet"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def first_calls(cold_cache):
    """First-call rows ``(label, import s, first-call s, CPU s)`` and the warmup ``(wall s, CPU s)`` or None.

    Warm (default): warm the cache, then one fresh process per family.
    Cold: one fresh process per family, each on a new empty cache; then the
    warmup into an empty cache; then the warm rows again, on that cache.
    """
    env = dict(os.environ)
    if not cold_cache:
        _warmup(env)
        return [(label,) + _first_call(statement, env) for label, statement in FIRST_CALLS], None, None
    with tempfile.TemporaryDirectory() as scratch:
        env["NUMBA_CACHE_DIR"] = scratch
        cold = []
        for label, statement in FIRST_CALLS:
            shutil.rmtree(scratch)  # every family compiles from nothing, not from its predecessor's cache
            os.mkdir(scratch)
            cold.append((label,) + _first_call(statement, env))
        shutil.rmtree(scratch)
        os.mkdir(scratch)
        warmup = _warmup(env)
        warm = [(label,) + _first_call(statement, env) for label, statement in FIRST_CALLS]
    return cold, warmup, warm


def _first_call_table(title, rows):
    lines = ["", title, "", "| operation | import lcnumba s | first call s | total s | CPU s |", "|---|---|---|---|---|"]
    for label, imported, called, cpu in rows:
        lines.append(f"| {label} | {imported:.2f} | {called:.2f} | {imported + called:.2f} | {cpu:.2f} |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--workloads", default="all", help="comma-separated names or 'all'")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="the thread count compared with 1")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timing per workload")
    parser.add_argument("--min-repeat", type=int, default=3, help="fewest rounds per thread count")
    parser.add_argument("--skip-first-call", action="store_true", help="only the thread scaling")
    parser.add_argument("--skip-threads", action="store_true", help="only the first calls")
    parser.add_argument("--cold-cache", action="store_true", help="first calls compile into an empty cache")
    args = parser.parse_args(argv)
    names = list(WORKLOADS) if args.workloads == "all" else args.workloads.split(",")
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {', '.join(WORKLOADS)}")

    lines = []
    if not args.skip_threads:
        lines += [f"## Thread scaling, float32 fwd+bwd with out= buffers (load average {os.getloadavg()[0]:.1f})", "",
                  f"| workload | 1 thread ms | {args.threads} threads ms | speedup |", "|---|---|---|---|"]
        for name, one, many in time_threads(names, args.threads, args.budget, args.min_repeat):
            lines.append(f"| {name} | {one:.3g} | {many:.3g} | {one / many:.2f}x |")
    if not args.skip_first_call:
        first, warmup, warm = first_calls(args.cold_cache)
        if not args.cold_cache:
            lines += _first_call_table("## First call in a new process, warm cache (after `python -m lcnumba warmup`)",
                                       first)
        else:
            lines += _first_call_table(f"## First use: first fwd+bwd in a new process, empty cache "
                                       f"(load average {os.getloadavg()[0]:.1f})", first)
            lines += ["", f"`python -m lcnumba warmup` (every op, float32 and float64) into an empty cache: "
                          f"{warmup[0]:.1f} s wall, {warmup[1]:.1f} s CPU ({os.cpu_count()} cores)"]
            lines += _first_call_table("## First use: import and first fwd+bwd in a new process, after that warmup",
                                       warm)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
