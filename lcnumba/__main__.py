"""Command line: ``python -m lcnumba [layer|warmup|demo]``.

``layer`` (the default) runs one forward and backward of DeepFace's local
layer L4 and prints shapes and times; ``warmup`` compiles the kernels
(every op and both dtypes unless ``--ops``/``--dtype`` choose) into Numba's
on-disk cache, one process per core, and reports how long that took;
``demo`` trains a small DeepFace-style network (needs the ``demo`` extra).
"""

import argparse
import sys
import time

import numpy as np


def _layer(args):
    import numba

    import lcnumba

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 16, 63, 63), dtype=np.float32)
    out_shape = lcnumba.local_conv2d_output_shape(x.shape, 9, 16)
    oh, ow = out_shape[2:]
    w = rng.standard_normal((oh, ow, 16, 16, 9, 9), dtype=np.float32) * np.float32(1 / 36)
    b = np.zeros((16, oh, ow), dtype=np.float32)
    print(f"DeepFace L4 local layer, float32, {numba.get_num_threads()} threads")
    print(f"  x {x.shape}  w {w.shape} ({w.nbytes / 2**20:.0f} MiB, one filter bank per output position)")
    for attempt in ("first call (includes loading compiled kernels)", "second call"):
        start = time.perf_counter()
        y = lcnumba.local_conv2d_forward(x, w, b)
        forward = time.perf_counter() - start
        dy = np.ones_like(y)
        start = time.perf_counter()
        dx, dw, db = lcnumba.local_conv2d_backward(dy, x, w, b)
        backward = time.perf_counter() - start
        print(f"  {attempt}: forward {forward * 1e3:.1f} ms -> y {y.shape}; "
              f"backward {backward * 1e3:.1f} ms -> dx {dx.shape}, dw {dw.shape}, db {db.shape}")
    return 0


def _names(text):
    """A comma-separated list of names, or None (all) for None."""
    return None if text is None else [name.strip() for name in text.split(",") if name.strip()]


def _warmup(args):
    from . import warmup

    start = time.perf_counter()
    try:
        done = warmup.compile_all(_names(args.ops), _names(args.dtype), args.processes, progress=not args.quiet)
    except ValueError as error:  # an unknown op or dtype
        print(f"python -m lcnumba warmup: {error}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - start
    if args.verbose:
        for label, dtype, seconds in done:
            print(f"  {label} {dtype}: {seconds:.1f} s CPU")
    dtypes = sorted({dtype for _, dtype, _ in done})
    families = sorted({name for label, _, _ in done for name in label.split("+")})
    print(f"compiled {', '.join(families)} for {' and '.join(dtypes)} in {wall:.1f} s "
          f"({sum(s for _, _, s in done):.1f} s CPU in {len(done)} jobs)")
    return 0


def _demo(args):
    try:
        from . import demo
    except ImportError as error:  # the demo extra is missing
        print(f"the demo needs the demo extra: pip install 'lcnumba[demo]' ({error})", file=sys.stderr)
        return 1
    return demo.main(args.rest)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lcnumba", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    layer = sub.add_parser("layer", help="one forward+backward of DeepFace's L4 local layer (default)")
    layer.add_argument("--batch", type=int, default=8)
    warm = sub.add_parser("warmup", help="compile the kernels into the on-disk cache, one process per core")
    warm.add_argument("--ops", help="comma-separated op families (conv2d, tiled_conv2d, local_conv2d, max_pool2d, "
                                    "netvlad, or a 1-D form); default all")
    warm.add_argument("--dtype", help="comma-separated dtypes (float32, float64); default both")
    warm.add_argument("--processes", type=int, help="worker processes; default one per core")
    warm.add_argument("--quiet", action="store_true", help="no progress bar")
    warm.add_argument("--verbose", action="store_true", help="CPU seconds per job")
    demo = sub.add_parser("demo", help="train a DeepFace-style network (needs the demo extra)")
    demo.add_argument("rest", nargs=argparse.REMAINDER)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:  # the demo parses its own options (argparse's REMAINDER drops "--x" ones)
        return _demo(argparse.Namespace(rest=argv[1:]))
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["layer"] + argv)
    return {"layer": _layer, "warmup": _warmup, "demo": _demo}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
