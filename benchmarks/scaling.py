"""Parallel efficiency and first-call latency of lcnumba on the DESIGN section 6 workloads.

Two measurements, one Markdown report:

1. **Threads.** Each workload's forward+backward (``out=`` buffers, the
   calls of ``compare.py``) is timed with 1 thread and with ``--threads``
   threads (default: all cores), switching ``numba.set_num_threads``
   round by round in one process, so both counts see the same machine.
   The speedup column is ``time(1 thread) / time(n threads)``.
2. **First call.** For every operation family a fresh Python process
   imports lcnumba and makes its first call on small inputs; the process
   reports both durations. Run ``python -m lcnumba warmup`` first to measure
   a warm cache (the default here runs it for you), or pass ``--cold-cache``
   to measure compilation into an empty cache instead.

    python benchmarks/scaling.py                  # both, all workloads
    python benchmarks/scaling.py --workloads deepface_l4,vgg_conv3 --skip-first-call
"""

import os
import sys

if __name__ == "__main__":
    # Passive OpenMP waiting, as in compare.py: idle threads of one run must not slow the next.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
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
print(t1 - t0, t2 - t1)
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


def first_calls(cold_cache):
    """Rows ``(label, import seconds, first-call seconds)``, each from a fresh process."""
    env = dict(os.environ)
    scratch = None
    if cold_cache:
        scratch = tempfile.TemporaryDirectory()
        env["NUMBA_CACHE_DIR"] = scratch.name
    else:
        subprocess.run([sys.executable, "-m", "lcnumba", "warmup"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
    rows = []
    try:
        for label, statement in FIRST_CALLS:
            if cold_cache:  # every family compiles from nothing, not from its predecessor's cache
                shutil.rmtree(scratch.name)
                os.mkdir(scratch.name)
            done = subprocess.run([sys.executable, "-c", _CHILD.format(statement=statement)], check=True,
                                  env=env, capture_output=True, text=True)
            imported, called = (float(v) for v in done.stdout.split())
            rows.append((label, imported, called))
    finally:
        if scratch is not None:
            scratch.cleanup()
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--workloads", default="all", help="comma-separated names or 'all'")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="the thread count compared with 1")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timing per workload")
    parser.add_argument("--min-repeat", type=int, default=3, help="fewest rounds per thread count")
    parser.add_argument("--skip-first-call", action="store_true", help="only the thread scaling")
    parser.add_argument("--cold-cache", action="store_true", help="first calls compile into an empty cache")
    args = parser.parse_args(argv)
    names = list(WORKLOADS) if args.workloads == "all" else args.workloads.split(",")
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {', '.join(WORKLOADS)}")

    lines = [f"## Thread scaling, float32 fwd+bwd with out= buffers (load average {os.getloadavg()[0]:.1f})", "",
             f"| workload | 1 thread ms | {args.threads} threads ms | speedup |", "|---|---|---|---|"]
    for name, one, many in time_threads(names, args.threads, args.budget, args.min_repeat):
        lines.append(f"| {name} | {one:.3g} | {many:.3g} | {one / many:.2f}x |")
    if not args.skip_first_call:
        cache = "empty cache" if args.cold_cache else "warm cache (after `python -m lcnumba warmup`)"
        lines += ["", f"## First call in a new process, {cache}", "",
                  "| operation | import lcnumba s | first call s | total s |", "|---|---|---|---|"]
        for label, imported, called in first_calls(args.cold_cache):
            lines.append(f"| {label} | {imported:.2f} | {called:.2f} | {imported + called:.2f} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
