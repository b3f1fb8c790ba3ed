"""Compile the CPU kernels into Numba's on-disk cache, in parallel processes.

Kernels are compiled lazily, on first use, because eager signatures would
slow ``import lcnumba``. ``python -m lcnumba warmup`` calls every family of
the op table (``lcnumba.table``) once per dtype on tiny inputs, forward and
backward, so that later processes only load machine code. The 1-D forms run
the 2-D kernels, so they warm their 2-D twins.

Numba compiles on one thread, so the jobs run in separate processes, one per
core. A job is a *kernel set* and a dtype: families that run the same
kernels (``conv2d`` and ``tiled_conv2d`` both run the segment kernels of
``lcnumba.cpu.conv``) are one job, so no two processes compile one kernel.

Those segment kernels come per layout (``lcnumba.cpu.conv.segment_layout``):
the calls here compile the all-rows and all-columns twins, which serve the
usual geometries; a tiling whose segments mix the two layouts compiles the
per-segment kernel on its own first call.
"""

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

import numpy as np

from . import table

DTYPES = ("float32", "float64")

#: The kernel sets, largest first (the longest jobs start first), and the 2-D families each one serves.
KERNEL_SETS = {
    "conv": ("conv2d", "tiled_conv2d"),
    "local": ("local_conv2d",),
    "netvlad": ("netvlad",),
    "pool": ("max_pool2d",),
}


def _conv_call(name, dtype):
    import lcnumba

    fam = table.family(name)
    x = np.ones((1, 2, 5, 5), dtype)
    tiles = {"shared": (), "tiled": (2, 2), "local": (3, 3)}[fam.sharing]
    w = np.ones(tiles + (2, 2, 3, 3), dtype)
    b = np.ones((2,) + tiles, dtype)
    forward = getattr(lcnumba, f"{name}_forward")
    backward = getattr(lcnumba, f"{name}_backward")
    backward(forward(x, w, b), x, w, b)
    if fam.sharing == "shared":  # the pad and fold kernels of the padding modes serve every family
        backward(forward(x, w, b, padding=1, padding_mode="reflect"), x, w, b, padding=1, padding_mode="reflect")


def _pool_call(name, dtype):
    import lcnumba

    x = np.ones((1, 2, 6, 6), dtype)
    lcnumba.max_pool2d_forward(x, 2)
    y, indices = lcnumba.max_pool2d_forward(x, 2, return_indices=True)
    lcnumba.max_pool2d_backward(y, indices, x.shape)


def _netvlad_call(name, dtype):
    import lcnumba

    x = np.linspace(-1, 1, 2 * 4 * 6, dtype=dtype).reshape(2, 4, 6)
    w = np.linspace(-1, 1, 3 * 4, dtype=dtype).reshape(3, 4)
    b = np.zeros(3, dtype)
    c = np.linspace(0, 1, 2 * 4, dtype=dtype).reshape(2, 4)
    y = lcnumba.netvlad_forward(x, w, b, c)
    lcnumba.netvlad_backward(np.ones_like(y), x, w, b, c)


_CALLS = {"conv": _conv_call, "pool": _pool_call, "netvlad": _netvlad_call}


def families():
    """The families whose kernels warmup compiles: every 2-D family of the table (1-D forms share them)."""
    return [fam for fam in table.FAMILIES if not fam.twin]


def _select(values, known, what):
    """``values`` (None: all of ``known``) checked against ``known``; ``ValueError`` names the unknown ones."""
    if values is None:
        return list(known)
    unknown = [v for v in values if v not in known]
    if not values:
        raise ValueError(f"no {what} given; choose from {', '.join(known)}")
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(map(repr, unknown))}; choose from {', '.join(known)}")
    return list(dict.fromkeys(values))


def jobs(ops=None, dtypes=None):
    """The jobs that compile the kernels of ``ops`` for ``dtypes``: ``(kernel set, families, dtype)``.

    Parameters
    ----------
    ops : sequence of str, optional
        Family names of the op table (``conv2d``, ``local_conv1d``, ...; a 1-D
        form stands for its 2-D twin); all of them when None.
    dtypes : sequence of str, optional
        ``float32``, ``float64``; both when None.

    Returns
    -------
    list of (str, tuple of str, str)
        Largest kernel sets first.

    Raises
    ------
    ValueError
        For a name that is no family or dtype.
    """
    names = _select(ops, list(table.BY_NAME), "op")
    dtypes = _select(dtypes, DTYPES, "dtype")
    wanted = {table.family(name).twin or name for name in names}
    chosen = []
    for dtype in dtypes:
        for kernel_set, members in KERNEL_SETS.items():
            served = tuple(name for name in members if name in wanted)
            if served:
                chosen.append((kernel_set, served, dtype))
    # Largest sets first over both dtypes, so that the longest jobs do not start last.
    order = list(KERNEL_SETS)
    return sorted(chosen, key=lambda job: order.index(job[0]))


def run_job(families_, dtype):
    """Compile one job in this process: call each family of ``families_`` once; return its CPU seconds."""
    start = time.process_time()
    for name in families_:
        _CALLS[table.family(name).kind](name, np.dtype(dtype).type)
    return time.process_time() - start


def _progress(total):
    """A progress bar over ``total`` jobs: tqdm's (a dependency), or one line per job on stderr where it is missing."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _Lines(total)
    return tqdm(total=total, unit="job", desc="compiling")


class _Lines:
    """The progress bar without tqdm: ``[k/n] description`` per finished job."""

    def __init__(self, total):
        self.total, self.done = total, 0

    def update(self, n=1):
        self.done += n

    def set_postfix_str(self, text):
        print(f"[{self.done}/{self.total}] {text}", file=sys.stderr, flush=True)

    def close(self):
        pass


def compile_all(ops=None, dtypes=None, processes=None, progress=True):
    """Compile the kernels of ``ops`` for ``dtypes`` in ``processes`` worker processes.

    Parameters
    ----------
    ops, dtypes : sequence of str, optional
        As in ``jobs``; everything when None.
    processes : int, optional
        Worker processes; the cores this process may run on when None. With
        1 the jobs run in this process.
    progress : bool
        Show a progress bar (tqdm's when installed).

    Returns
    -------
    list of (str, str, float)
        ``(families, dtype, CPU seconds)`` per job, in the order they finished.
    """
    todo = jobs(ops, dtypes)
    if processes is None:
        processes = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    processes = max(1, min(processes, len(todo)))
    bar = _progress(len(todo)) if progress else None
    done = []

    def finished(job, seconds):
        label = "+".join(job[1])
        done.append((label, job[2], seconds))
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"{label} {job[2]} {seconds:.1f} s")

    try:
        if processes == 1:
            for job in todo:
                finished(job, run_job(job[1], job[2]))
        else:
            # spawn: a forked child would inherit this process's Numba threading layer, which is not fork-safe
            with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
                futures = {pool.submit(run_job, job[1], job[2]): job for job in todo}
                for future in as_completed(futures):
                    finished(futures[future], future.result())
    finally:
        if bar is not None:
            bar.close()
    return done
