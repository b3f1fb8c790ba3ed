"""Cost of calling a kernel through its C entry point instead of the Python API.

Run from the repository root::

    python benchmarks/capi_overhead.py                      # deepface_l6, 300 rounds
    python benchmarks/capi_overhead.py --repeat 1000 --workload deepface_l5

It times one ``lcn_local_conv2d_forward_f32`` call (through ctypes, the way
a C host calls the address) against ``lcnumba.local_conv2d_forward(x, w, b,
out=y)`` on the DESIGN section 6 workload, in the same process, round by
round so that load from other processes spreads over both alike. Three paths:

- ``python``: the Python API with ``out=``;
- ``c (numpy args)``: the ctypes function of ``lcnumba.capi.ctypes_function``
  called with NumPy arrays (each argument checked by ctypes);
- ``c (pointers)``: the same address called with ready-made ctypes pointers,
  which is what a C caller pays (the call itself, the checks in compiled code).

The outputs are checked to be bitwise equal before anything is timed. The
requirement is ``c <= python * 1.05``; it prints the medians, the ratio and
PASS or FAIL. A second table does the same on a tiny input, where the fixed
per-call costs (argument checks in Python, ctypes) are all there is.
"""

import argparse
import ctypes
import pathlib
import statistics
import sys
import time

import numba
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import lcnumba  # noqa: E402
from lcnumba import capi  # noqa: E402
from lcnumba.cpu.blas import _blas_libraries  # noqa: E402
from workloads import WORKLOADS  # noqa: E402

NAME = "lcn_local_conv2d_forward_f32"


def _paths(x, w, b):
    """The three ways of computing ``y``; each writes into its own buffer."""
    n, c, h, width = x.shape
    oh, ow, f, cg, kh, kw = w.shape
    dims = (n, c, h, width, oh, ow, f, cg, kh, kw, 1, 1, 0, 0, 0, 0, 1, 1, 1)
    outputs = {key: np.empty((n, f, oh, ow), np.float32) for key in ("python", "c (numpy args)", "c (pointers)")}
    fn = capi.ctypes_function(NAME)
    pointer = ctypes.POINTER(ctypes.c_float)
    raw = [a.ctypes.data_as(pointer) for a in (x, w, b, outputs["c (pointers)"])] + list(dims)
    y_np = outputs["c (numpy args)"]
    y_py = outputs["python"]

    def python():
        lcnumba.local_conv2d_forward(x, w, b, out=y_py)

    def c_numpy():
        if fn(x, w, b, y_np, *dims) != 0:
            raise RuntimeError("the C entry point failed")

    def c_pointers():
        if fn(*raw) != 0:
            raise RuntimeError("the C entry point failed")

    return {"python": python, "c (numpy args)": c_numpy, "c (pointers)": c_pointers}, outputs


def measure(x, w, b, repeat):
    """Median, minimum and mean seconds per path, interleaved round by round."""
    calls, outputs = _paths(x, w, b)
    for call in calls.values():  # compile, load, warm the caches
        call()
        call()
    reference = outputs["python"].tobytes()
    for key, y in outputs.items():
        if y.tobytes() != reference:
            raise SystemExit(f"{key}: output differs from the Python API's")
    times = {key: [] for key in calls}
    for _ in range(repeat):
        for key, call in calls.items():
            start = time.perf_counter()
            call()
            times[key].append(time.perf_counter() - start)
    return {key: (statistics.median(t), min(t), statistics.fmean(t)) for key, t in times.items()}


def _table(title, results):
    base = results["python"][0]
    lines = [f"### {title}", "", "| path | median | min | mean | median / python |", "|---|---:|---:|---:|---:|"]
    for key, (median, best, mean) in results.items():
        lines.append(f"| {key} | {median * 1e6:.1f} us | {best * 1e6:.1f} us | {mean * 1e6:.1f} us | "
                     f"{median / base:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="deepface_l6")
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args(argv)

    wl = WORKLOADS[args.workload]
    if wl.op != "local_conv2d":
        raise SystemExit(f"{args.workload}: a local_conv2d workload is needed, got {wl.op}")
    inputs = wl.make_inputs(np.float32)
    x, w, b = (np.ascontiguousarray(inputs[key]) for key in ("x", "w", "b"))
    if wl.stride != (1, 1) or wl.padding != (0, 0) or wl.dilation != (1, 1):
        raise SystemExit("this script passes stride 1, no padding and dilation 1")

    results = measure(x, w, b, args.repeat)
    tiny = np.ones((1, 1, 3, 3), np.float32), np.ones((1, 1, 1, 1, 3, 3), np.float32), np.ones((1, 1, 1), np.float32)
    tiny_results = measure(*tiny, args.repeat)

    blas = ", ".join(f"{pathlib.Path(lib.filepath).name}: {lib.num_threads}" for lib in _blas_libraries())
    print(f"{NAME} vs lcnumba.local_conv2d_forward(out=), {args.workload}: x {x.shape}, w {w.shape}, "
          f"{args.repeat} interleaved rounds")
    print(f"numba {numba.__version__}, {numba.get_num_threads()} threads ({numba.threading_layer()}); "
          f"BLAS threads {blas}\n")
    print(_table(args.workload, results))
    print()
    print(_table("tiny input (1x1x3x3, fixed per-call cost)", tiny_results))
    ratio = results["c (numpy args)"][0] / results["python"][0]
    ratio_raw = results["c (pointers)"][0] / results["python"][0]
    verdict = "PASS" if max(ratio, ratio_raw) <= 1.05 else "FAIL"
    print(f"\nC path / Python path (medians): {ratio:.3f} with NumPy arguments, {ratio_raw:.3f} with pointers "
          f"(limit 1.05): {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
