"""Static report on lcnumba's CUDA kernels and host path; needs the CUDA toolkit, not a GPU.

Run from the repository root::

    python benchmarks/gpu_report.py                 # both tables, Markdown, to stdout
    python benchmarks/gpu_report.py --output r.md   # and to a file
    python benchmarks/gpu_report.py --dtype float64 # the calls (so the kernels) in float64

Two tables:

1. **Host path**, per public call (float32 or ``--dtype``, tiny shapes, a non-default
   stream, ``out=`` wherever the call takes one; the second call of each,
   so that what is made once per process is left out), run on Numba's CUDA
   simulator with the simulator's launch, allocation and synchronisation
   entry points wrapped: kernel launches, device allocations
   (``device_array``, ``device_array_like``, ``to_device``, ``mapped_array``,
   ``pinned_array``) and host synchronisations (``copy_to_host``,
   ``Stream.synchronize``, ``cuda.synchronize``). The counts depend on the
   host code only, so the simulator gives the GPU's numbers. The weight
   and bias gradients' column split is forced on (``MIN_COLUMNS_PER_SPLIT``
   patched down) so that its scratch shows.
2. **Kernels**: every kernel launched by those calls, compiled for its
   declared signature (``lcnumba.gpu.jit.Kernel``) at the dtype it was
   launched with to PTX for sm_90 (``numba.cuda.compile_ptx``, with the
   kernels' launch bounds), then assembled by ``ptxas -v``: registers per thread, spill
   stores and loads (bytes), and the 64-bit integer divisions and remainders
   (``div``/``rem`` ``.s64``/``.u64``) in the PTX: all of them, those inside a
   loop (between a label and a later branch back to it) and those inside an
   inner loop (a loop within the kernel's grid- or block-stride loop); and
   the 32-bit ones inside an inner loop.

The simulator and the compiler cannot share a process (the simulator is
chosen when numba-cuda is imported), so each table is made by a child
process of this script; the first hands the second the launched dtypes.
``ptxas`` is looked up on ``PATH``, then under ``CUDA_HOME`` and
``/usr/local/cuda``.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from functools import partial

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ====================================================================== host path (simulator child)


def _host_path_counts(dtype):
    """``(rows, signatures)``: per public call its counts, per kernel the argument types it was launched with."""
    import numpy as np
    from numba import cuda
    from numba.cuda.simulator import kernel as sim_kernel
    from numba.cuda.simulator.cudadrv import devicearray as sim_array

    import lcnumba
    from lcnumba import config
    from lcnumba.gpu import conv as gpu_conv
    from lcnumba.gpu.jit import Kernel

    config.THREADS_PER_BLOCK = 32  # the simulator runs every thread in Python
    gpu_conv.MIN_COLUMNS_PER_SPLIT = 8
    counts = {"launches": 0, "allocations": 0, "syncs": 0}
    signatures = {}

    launch_kernel = sim_kernel.FakeCUDAKernel.__call__

    def counted_call(self, *args):
        if not self._device and not sim_kernel._kernel_context:
            counts["launches"] += 1
            fn = self.fn
            key = f"{fn.__module__}.{fn.__qualname__}"
            declared = isinstance(getattr(sys.modules[fn.__module__], fn.__qualname__, None), Kernel)
            # a kernel without a declared signature (``@kernel`` used bare) is listed, not compiled
            signatures.setdefault(key, str(next(a.dtype for a in args if hasattr(a, "dtype"))) if declared else None)
        return launch_kernel(self, *args)

    def counted(name, owner, fn):
        def wrapped(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)

        setattr(owner, fn.__name__, wrapped)

    sim_kernel.FakeCUDAKernel.__call__ = counted_call
    for fname in ("device_array", "device_array_like", "to_device", "mapped_array", "pinned_array"):
        counted("allocations", cuda, getattr(cuda, fname))
    counted("syncs", sim_array.FakeCUDAArray, sim_array.FakeCUDAArray.copy_to_host)
    counted("syncs", type(cuda.stream()), type(cuda.stream()).synchronize)
    counted("syncs", cuda, cuda.synchronize)

    rng = np.random.default_rng(0)
    stream = cuda.stream()
    real = np.dtype(dtype)

    def dev(*shape):
        return cuda.to_device(rng.standard_normal(shape).astype(real))

    def empty(shape, dtype=real):
        return cuda.to_device(np.zeros(shape, dtype))

    cases = []  # (label, call): every buffer a call is handed is made here, before counting starts
    conv_shapes = {  # (x, w, b, dy) shapes: 2 samples, 3 channels, 3x3 kernels, 4 filters
        "conv2d": ((2, 3, 12, 12), (4, 3, 3, 3), (4,), (2, 4, 10, 10)),  # 200 columns: split in 7
        "tiled_conv2d": ((2, 3, 6, 6), (2, 2, 4, 3, 3, 3), (4, 2, 2), (2, 4, 4, 4)),
        "local_conv2d": ((2, 3, 6, 6), (4, 4, 4, 3, 3, 3), (4, 4, 4), (2, 4, 4, 4)),
    }
    for name, (xs, ws, bs, ys) in conv_shapes.items():
        x, w, b, dy = dev(*xs), dev(*ws), dev(*bs), dev(*ys)
        y, dx, dw, db = empty(ys), empty(xs), empty(ws), empty(bs)
        op = {part: getattr(lcnumba, f"{name}_{part}") for part in lcnumba.table.CONV_PASSES}
        cases += [
            (f"{name}_forward(out=)", partial(op["forward"], x, w, b, out=y, stream=stream)),
            (f"{name}_backward_input(out=)", partial(op["backward_input"], dy, w, xs, out=dx, stream=stream)),
            (f"{name}_backward_weight(out=)", partial(op["backward_weight"], dy, x, ws, out=dw, stream=stream)),
            (f"{name}_backward_bias(out=)", partial(op["backward_bias"], dy, bs, out=db, stream=stream)),
            (f"{name}_backward (3 outputs)", partial(op["backward"], dy, x, w, b, stream=stream)),
        ]
    xs = (2, 3, 7, 7)
    pool = {"kernel_size": 3, "stride": 2, "padding": 1}
    ys = lcnumba.max_pool2d_output_shape(xs, **pool)
    x, dy, y, dx, idx_out = dev(*xs), dev(*ys), empty(ys), empty(xs), empty(ys, np.int64)
    idx = cuda.to_device(lcnumba.max_pool2d_forward(x.copy_to_host(), **pool, return_indices=True)[1])
    cases += [
        ("max_pool2d_forward(out=)", partial(lcnumba.max_pool2d_forward, x, **pool, out=y, stream=stream)),
        ("max_pool2d_forward(out=, indices_out=)", partial(lcnumba.max_pool2d_forward, x, **pool,
                                                           return_indices=True, out=y, indices_out=idx_out,
                                                           stream=stream)),
        ("max_pool2d_backward(out=)", partial(lcnumba.max_pool2d_backward, dy, idx, xs, out=dx, stream=stream)),
        ("max_pool2d_backward(geometry, out=)", partial(lcnumba.max_pool2d_backward, dy, idx, xs, **pool, out=dx,
                                                        stream=stream)),
    ]
    n, d, m, k, g = 2, 8, 6, 3, 1
    x, w, b, c, dy, y = dev(n, d, m), dev(k + g, d), dev(k + g), dev(k, d), dev(n, k * d), empty((n, k * d))
    cases += [
        ("netvlad_forward(out=)", partial(lcnumba.netvlad_forward, x, w, b, c, out=y, stream=stream)),
        ("netvlad_backward (4 outputs)", partial(lcnumba.netvlad_backward, dy, x, w, b, c, stream=stream)),
    ]

    rows = []
    for label, call in cases:
        call()  # first use: what is made once per process (the pooling error buffer) is not counted
        before = dict(counts)
        call()
        rows.append({"call": label, **{key: counts[key] - before[key] for key in counts}})
    return rows, signatures


# ====================================================================== kernels (compiler child)


def _find_ptxas():
    for candidate in (shutil.which("ptxas"),
                      os.path.join(os.environ.get("CUDA_HOME", ""), "bin", "ptxas"),
                      "/usr/local/cuda/bin/ptxas"):
        if candidate and os.path.exists(candidate):
            return candidate
    raise SystemExit("gpu_report: ptxas not found (install the CUDA toolkit or set CUDA_HOME)")


_DIV64 = re.compile(r"\b(div|rem)\.[su]64\b")
_DIV32 = re.compile(r"\b(div|rem)\.[su]32\b")
_LABEL = re.compile(r"^\s*(\$?[\w$]+):")
_BRANCH = re.compile(r"\bbra(?:\.uni)?\s+(\$?[\w$]+);")


def ptx_divisions(ptx):
    """Counts of the integer divisions and remainders of ``ptx`` by width and loop depth.

    ``(all 64-bit, 64-bit in a loop, 64-bit in an inner loop, 32-bit in an inner loop)``. A loop is
    the lines from a label to a later branch back to it; a line's depth is the number of loops around
    it, so a kernel's grid- or block-stride loop is depth 1 and the loops inside it are inner loops.
    """
    lines = ptx.splitlines()
    labels = {}
    depth = [0] * len(lines)
    for i, line in enumerate(lines):
        m = _LABEL.match(line)
        if m:
            labels[m.group(1)] = i
        b = _BRANCH.search(line)
        if b and b.group(1) in labels and labels[b.group(1)] <= i:  # a branch back: lines between form a loop
            for j in range(labels[b.group(1)], i + 1):
                depth[j] += 1
    total = loops = inner = inner32 = 0
    for i, line in enumerate(lines):
        if _DIV64.search(line):
            total += 1
            loops += depth[i] >= 1
            inner += depth[i] >= 2
        elif _DIV32.search(line):
            inner32 += depth[i] >= 2
    return total, loops, inner, inner32


def _ptxas_info(ptxas, ptx, workdir, name):
    path = os.path.join(workdir, name + ".ptx")
    with open(path, "w") as fh:
        fh.write(ptx)
    proc = subprocess.run([ptxas, "-arch=sm_90", "-v", path, "-o", os.devnull], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"gpu_report: ptxas failed on {name}:\n{proc.stderr}")
    regs = re.findall(r"Used (\d+) registers", proc.stderr)
    stores = re.findall(r"(\d+) bytes spill stores", proc.stderr)
    loads = re.findall(r"(\d+) bytes spill loads", proc.stderr)
    return max(map(int, regs)), sum(map(int, stores)), sum(map(int, loads))


def _kernel_table(signatures):
    import importlib

    from types import SimpleNamespace

    from numba import cuda
    from numba.cuda import dispatcher


    # device functions are compiled for the current device's compute capability: with no device, claim sm_90
    dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=(9, 0))
    ptxas = _find_ptxas()
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for key in sorted(signatures):
            module, _, qualname = key.rpartition(".")
            kern = getattr(importlib.import_module(module), qualname)
            if signatures[key] is None:
                rows.append(dict.fromkeys(("registers", "spill_stores", "spill_loads", "div64", "div64_in_loops",
                                           "div64_inner", "div32_inner"), "-")
                            | {"kernel": key.replace("lcnumba.gpu.", "") + " (signature not declared)"})
                continue
            ptx, _ = cuda.compile_ptx(kern.py_func, kern.signature_for(signatures[key]), cc=(9, 0),
                                      launch_bounds=kern.launch_bounds)
            regs, spill_st, spill_ld = _ptxas_info(ptxas, ptx, workdir, qualname)
            divs, loop_divs, inner_divs, inner_divs32 = ptx_divisions(ptx)
            rows.append({"kernel": key.replace("lcnumba.gpu.", ""), "registers": regs, "spill_stores": spill_st,
                         "spill_loads": spill_ld, "div64": divs, "div64_in_loops": loop_divs,
                         "div64_inner": inner_divs, "div32_inner": inner_divs32})
    return rows


# ====================================================================== report


def _table(rows, columns, headers):
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        out.append("| " + " | ".join(str(row[c]) for c in columns) + " |")
    return "\n".join(out)


def _child(mode, payload):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1" if mode == "counts" else "0",
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    env.setdefault("CUDA_HOME", "/usr/local/cuda")
    with tempfile.NamedTemporaryFile("w+", suffix=".json") as fh:
        json.dump(payload, fh)
        fh.flush()
        subprocess.run([sys.executable, os.path.abspath(__file__), "--child", mode, fh.name], env=env, check=True)
        fh.seek(0)
        return json.load(fh)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", help="also write the report to this file")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="the element type of every call, so of the kernels compiled (default: float32)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, path = args.child
        with open(path) as fh:
            payload = json.load(fh)
        if mode == "counts":
            rows, signatures = _host_path_counts(payload["dtype"])
            result = {"rows": rows, "signatures": signatures}
        else:
            result = {"rows": _kernel_table(payload["signatures"])}
        with open(path, "w") as fh:
            json.dump(result, fh)
        return
    counts = _child("counts", {"dtype": args.dtype})
    kernels = _child("ptx", {"signatures": counts["signatures"]})
    report = "\n".join([
        f"Host path per public call (simulator; {args.dtype}; a non-default stream; out= buffers not counted; "
        "each call's second run):",
        "",
        _table(counts["rows"], ["call", "launches", "allocations", "syncs"],
               ["call", "launches", "device allocations", "host syncs"]),
        "",
        f"Kernels (PTX for sm_90, ptxas -v; {args.dtype} launches of the calls above):",
        "",
        _table(kernels["rows"], ["kernel", "registers", "spill_stores", "spill_loads", "div64", "div64_in_loops",
                                 "div64_inner", "div32_inner"],
               ["kernel", "registers", "spill stores (B)", "spill loads (B)", "64-bit div/rem", "in loops",
                "in inner loops", "32-bit div/rem in inner loops"]),
        "",
    ])
    print(report)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(report)


if __name__ == "__main__":
    main()
