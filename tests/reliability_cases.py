"""Calls of every public CPU function, shared by the thread, determinism and boundscheck tests.

Each call is a ``(name, thunk)`` pair: the thunk runs one public function
(``lcnumba.<name>``, or a forward and its backward) on fixed inputs and
returns its results as a tuple of arrays, so two runs can be compared bit
for bit. Names read ``function[geometry] variant dtype``.

``calls(dtype)`` is a small set, one or two geometries per family, large
enough that every kernel splits its work into several tasks (segments,
batch chunks, weight-gradient chunks, row blocks, planes, samples), so that
the thread count changes how the work is distributed. ``wide_calls(dtype)``
adds every convolution geometry of ``CONV_2D`` and ``CONV_1D`` for every
family (tiled in both tile modes), more pooling and NetVLAD geometries, and
the DESIGN section 6 workloads shrunk to a batch of 2.

Run as a script, it hammers the calls from several Python threads and
compares every result with a serial run (used in a child process with
``NUMBA_THREADING_LAYER=workqueue`` by ``test_threads.py``).
"""

import sys
import threading
import time

import numpy as np

import lcnumba

#: Tile grids of the tiled families in the generated geometries, by number of spatial axes.
TILES = {2: (2, 3), 1: (3,)}

#: Convolution families by number of spatial axes, with their tile modes.
FAMILIES = {
    2: (("conv2d", None), ("tiled_conv2d", "periodic"), ("tiled_conv2d", "block"), ("local_conv2d", None)),
    1: (("conv1d", None), ("tiled_conv1d", "periodic"), ("tiled_conv1d", "block"), ("local_conv1d", None)),
}

#: label: (x shape, filters, kernel, params); every family of FAMILIES runs each.
CONV_2D = {
    "odd": ((3, 4, 9, 10), 4, (3, 3), {}),
    "padded": ((2, 3, 12, 11), 4, (3, 3), dict(padding=1)),
    "same-grouped": ((2, 4, 11, 8), 6, (3, 3), dict(padding="same", groups=2)),
    "asymmetric": ((3, 4, 12, 11), 4, (2, 3), dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2))),
    "dilated-grouped": ((2, 6, 13, 12), 6, (3, 3), dict(stride=(1, 2), padding=2, dilation=2, groups=3)),
    "stride-3": ((2, 2, 17, 16), 3, (5, 5), dict(stride=3, padding=1)),
    "depthwise": ((2, 4, 9, 6), 4, (3, 1), dict(stride=(2, 1), padding=((1, 1), (0, 0)), groups=4)),
    "tall": ((2, 2, 41, 5), 3, (4, 2), dict(padding=((2, 1), (0, 1)))),
    "batch-35": ((35, 2, 6, 7), 2, (3, 3), dict(padding=1)),
}
CONV_1D = {
    "same": ((3, 4, 17), 5, (3,), dict(padding="same")),
    "asymmetric": ((2, 4, 23), 4, (4,), dict(stride=2, padding=(2, 1), dilation=2, groups=2)),
    "stride-3": ((2, 3, 30), 3, (5,), dict(stride=3, padding=2)),
}

#: DESIGN section 6 convolutions at batch 2: name: (family, x shape, w shape, params). deepface_l4's
#: 63x63 input is cropped to 23x23, which keeps its 9x9 filters but not its 0.25 GB weight.
CONV_WORKLOADS = {
    "deepface_c1": ("conv2d", (2, 3, 152, 152), (32, 3, 11, 11), {}),
    "deepface_l4": ("local_conv2d", (2, 16, 23, 23), (15, 15, 16, 16, 9, 9), {}),
    "deepface_l5": ("local_conv2d", (2, 16, 55, 55), (25, 25, 16, 16, 7, 7), dict(stride=2)),
    "deepface_l6": ("local_conv2d", (2, 16, 25, 25), (21, 21, 16, 16, 5, 5), {}),
    "tiled_k2": ("tiled_conv2d", (2, 32, 32, 32), (2, 2, 32, 32, 5, 5), dict(padding=2, tile_mode="periodic")),
    "vgg_conv3": ("conv2d", (2, 64, 56, 56), (64, 64, 3, 3), dict(padding=1)),
}

#: The small set: (family, label, x shape, w shape, params).
CONV_SMALL = (
    ("conv2d", "grouped", (3, 4, 9, 10), (4, 2, 3, 3), dict(padding=1, groups=2)),
    ("conv2d", "asymmetric", (3, 4, 9, 10), (6, 4, 2, 3), dict(stride=(2, 1), padding=((1, 0), (2, 1)),
                                                               dilation=(1, 2))),
    ("tiled_conv2d", "same", (3, 4, 9, 10), (2, 3, 4, 4, 3, 3), dict(padding="same", tile_mode="periodic")),
    ("tiled_conv2d", "block", (3, 4, 9, 10), (3, 2, 4, 2, 3, 2), dict(stride=2, groups=2, tile_mode="block")),
    ("local_conv2d", "plain", (3, 4, 9, 10), (7, 8, 4, 4, 3, 3), {}),
    ("local_conv2d", "dilated", (3, 4, 9, 10), (5, 4, 2, 2, 3, 3), dict(stride=2, padding=1, dilation=(1, 2),
                                                                         groups=2)),
    ("conv1d", "same", (3, 4, 17), (5, 4, 3), dict(padding="same")),
    ("tiled_conv1d", "block", (3, 4, 17), (3, 4, 2, 3), dict(stride=2, groups=2, tile_mode="block")),
    ("local_conv1d", "plain", (3, 4, 17), (15, 4, 4, 3), {}),
)

#: The transposed families' small set: (family, label, x shape, w shape, params, b shape).
TRANSPOSE_SMALL = (
    ("conv2d_transpose", "grouped", (3, 4, 5, 6), (4, 3, 3, 3), dict(stride=2, padding=1, output_padding=1, groups=2),
     (6,)),
    ("tiled_conv2d_transpose", "block", (3, 4, 5, 6), (2, 3, 4, 2, 3, 2),
     dict(stride=(2, 1), dilation=(1, 2), output_padding=1, tile_mode="block"), (2, 2, 3)),
    ("local_conv2d_transpose", "plain", (3, 4, 5, 6), (5, 6, 4, 2, 3, 3), dict(stride=2), (2, 11, 13)),
    ("conv1d_transpose", "padded", (3, 4, 17), (4, 5, 3), dict(padding=1), (5,)),
    ("tiled_conv1d_transpose", "periodic", (3, 4, 17), (3, 4, 2, 3), dict(stride=2, groups=2, tile_mode="periodic"),
     (4, 3)),
    ("local_conv1d_transpose", "plain", (3, 4, 9), (9, 4, 2, 3), dict(stride=2), (2, 19)),
)

#: label: (x shape, params, values); values "nan" puts a NaN in, "ties" rounds to integers.
POOL_SMALL = {
    "k3-s2-p1": ((3, 5, 11, 12), dict(kernel_size=3, stride=2, padding=1), "nan"),
    "dilated-ceil": ((3, 5, 11, 12), dict(kernel_size=(2, 3), stride=(1, 2), dilation=(2, 1), ceil_mode=True), "nan"),
    "1d-ceil": ((3, 5, 23), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), "ties"),
}
POOL_WIDE = {
    "k3-s1-p1": ((2, 3, 10, 9), dict(kernel_size=3, stride=1, padding=1), "ties"),
    "dilated-strided": ((2, 4, 13, 11), dict(kernel_size=(3, 2), stride=3, dilation=2, padding=(1, 0)), "nan"),
    "1d-dilated": ((2, 4, 30), dict(kernel_size=4, stride=3, dilation=2, padding=2), "nan"),
    "deepface_m2": ((2, 32, 142, 142), dict(kernel_size=3, stride=2), "plain"),
    "vgg_pool": ((2, 64, 112, 112), dict(kernel_size=2, stride=2), "plain"),
}

#: label: (x shape, clusters, ghosts, normalize_input).
NETVLAD_SMALL = {
    "ghosts": ((5, 8, 3, 4), 4, 2, True),
    "plain": ((3, 6, 10), 3, 0, False),
}
NETVLAD_WIDE = {
    "odd": ((3, 16, 7, 5), 5, 1, True),
    "many-ghosts": ((2, 12, 9), 4, 3, False),
    "netvlad_vgg": ((2, 512, 30, 40), 64, 0, True),
}


def _rng(seed):
    return np.random.default_rng(seed)


def _conv_weight_shape(family, x_shape, filters, kernel, params):
    """The weight of ``family`` for a geometry: one bank, a grid of tiles or one bank per output position."""
    spatial = len(x_shape) - 2
    bank = (filters, x_shape[1] // params.get("groups", 1)) + kernel
    if family.startswith("conv"):
        return bank
    if family.startswith("tiled"):
        return TILES[spatial] + bank
    query = getattr(lcnumba, f"{family}_output_shape")
    geometry = {k: v for k, v in params.items() if k != "tile_mode"}
    return query(x_shape, kernel if spatial == 2 else kernel[0], filters, **geometry)[2:] + bank


def _conv_calls(rng, dtype, family, label, x_shape, w_shape, params, b_shape=None):
    """Forward, the three gradients, the weight gradient accumulated and the whole backward of one geometry.

    ``b_shape`` defaults to the forward families' (one bias per filter and tile or output position).
    """
    tile_dims = 0 if family.startswith("conv") else len(x_shape) - 2
    if b_shape is None:
        b_shape = (w_shape[tile_dims],) + tuple(w_shape[:tile_dims])
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(b_shape).astype(dtype)
    forward = getattr(lcnumba, f"{family}_forward")
    dy = rng.standard_normal(forward(x, w, b, **params).shape).astype(dtype)
    start = rng.standard_normal(w_shape).astype(dtype)
    fn = {part: getattr(lcnumba, f"{family}_{part}")
          for part in ("backward_input", "backward_weight", "backward_bias", "backward")}
    bias_params = {k: v for k, v in params.items() if k == "tile_mode"}
    return [
        (f"{family}_forward[{label}]", lambda: (forward(x, w, b, **params),)),
        (f"{family}_backward_input[{label}]", lambda: (fn["backward_input"](dy, w, x.shape, **params),)),
        (f"{family}_backward_weight[{label}]", lambda: (fn["backward_weight"](dy, x, w.shape, **params),)),
        (f"{family}_backward_weight[{label}] accumulate",
         lambda: (fn["backward_weight"](dy, x, w.shape, out=start.copy(), accumulate=True, **params),)),
        (f"{family}_backward_bias[{label}]", lambda: (fn["backward_bias"](dy, b.shape, **bias_params),)),
        (f"{family}_backward[{label}]", lambda: fn["backward"](dy, x, w, b, **params)),
    ]


def _pool_calls(rng, dtype, label, x_shape, params, values):
    """Forward without and with indices, and backward, of one pooling geometry."""
    x = rng.standard_normal(x_shape)
    if values == "ties":
        x = np.round(x)
    elif values == "nan":
        x.reshape(-1)[x.size // 3] = np.nan
    x = x.astype(dtype)
    family = "max_pool2d" if x.ndim == 4 else "max_pool1d"
    forward = getattr(lcnumba, f"{family}_forward")
    backward = getattr(lcnumba, f"{family}_backward")
    y, indices = forward(x, return_indices=True, **params)
    dy = rng.standard_normal(y.shape).astype(dtype)
    return [
        (f"{family}_forward[{label}]", lambda: (forward(x, **params),)),
        (f"{family}_forward[{label}] indices", lambda: forward(x, return_indices=True, **params)),
        (f"{family}_backward[{label}]", lambda: (backward(dy, indices, x.shape),)),
    ]


def _netvlad_calls(rng, dtype, label, x_shape, clusters, ghosts, normalize_input):
    """Forward and backward of one NetVLAD geometry: plain, masked without intra-normalisation, its aggregation
    core on a random assignment and a PCA layer on its output."""
    d = x_shape[1]
    n, m = x_shape[0], int(np.prod(x_shape[2:]))
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((clusters + ghosts, d)).astype(dtype)
    b = rng.standard_normal(clusters + ghosts).astype(dtype)
    c = rng.standard_normal((clusters, d)).astype(dtype)
    dy = rng.standard_normal((n, clusters * d)).astype(dtype)
    options = dict(normalize_input=normalize_input, intra_normalize=False, mask=rng.random((n, m)) < 0.7)
    a = rng.random((n, clusters) + x_shape[2:]).astype(dtype)
    dim = min(16, clusters * d)
    p = rng.standard_normal((dim, clusters * d)).astype(dtype)
    bias = rng.standard_normal(dim).astype(dtype)
    dz = rng.standard_normal((n, dim)).astype(dtype)
    return [
        (f"netvlad_forward[{label}]",
         lambda: (lcnumba.netvlad_forward(x, w, b, c, normalize_input=normalize_input),)),
        (f"netvlad_backward[{label}]",
         lambda: lcnumba.netvlad_backward(dy, x, w, b, c, normalize_input=normalize_input)),
        (f"netvlad_forward[{label}] masked", lambda: (lcnumba.netvlad_forward(x, w, b, c, **options),)),
        (f"netvlad_backward[{label}] masked", lambda: lcnumba.netvlad_backward(dy, x, w, b, c, **options)),
        (f"vlad_aggregate_forward[{label}]", lambda: (lcnumba.vlad_aggregate_forward(x, a, c),)),
        (f"vlad_aggregate_backward[{label}]", lambda: lcnumba.vlad_aggregate_backward(dy, x, a, c)),
        (f"netvlad_pca_forward[{label}]", lambda: (lcnumba.netvlad_pca_forward(dy, p, bias),)),
        (f"netvlad_pca_backward[{label}]", lambda: lcnumba.netvlad_pca_backward(dz, dy, p, bias)),
    ]


def _with_dtype(pairs, dtype):
    return [(f"{name} {np.dtype(dtype).name}", thunk) for name, thunk in pairs]


def calls(dtype=np.float64):
    """``(name, thunk)`` for every CPU function of the public API on one or two geometries, for one dtype."""
    out = []
    rng = _rng(0)
    for spec in CONV_SMALL + TRANSPOSE_SMALL:
        out += _conv_calls(rng, dtype, *spec)
    rng = _rng(1)
    for label, spec in POOL_SMALL.items():
        out += _pool_calls(rng, dtype, label, *spec)
    rng = _rng(2)
    for label, spec in NETVLAD_SMALL.items():
        out += _netvlad_calls(rng, dtype, label, *spec)
    return _with_dtype(out, dtype)


def wide_calls(dtype=np.float64):
    """``calls(dtype)`` and every geometry of the wide tables and the section 6 workloads."""
    out = []
    rng = _rng(3)
    for tables in (CONV_2D, CONV_1D):
        for label, (x_shape, filters, kernel, params) in tables.items():
            for family, mode in FAMILIES[len(x_shape) - 2]:
                p = dict(params, tile_mode=mode) if mode else params
                w_shape = _conv_weight_shape(family, x_shape, filters, kernel, p)
                out += _conv_calls(rng, dtype, family, f"{label},{mode}" if mode else label, x_shape, w_shape, p)
    for label, (family, x_shape, w_shape, params) in CONV_WORKLOADS.items():
        out += _conv_calls(rng, dtype, family, label, x_shape, w_shape, params)
    for label, spec in POOL_WIDE.items():
        out += _pool_calls(rng, dtype, label, *spec)
    for label, spec in NETVLAD_WIDE.items():
        out += _netvlad_calls(rng, dtype, label, *spec)
    return calls(dtype) + _with_dtype(out, dtype)


def all_calls():
    return calls(np.float32) + calls(np.float64)


def all_wide_calls():
    return wide_calls(np.float32) + wide_calls(np.float64)


def run(thunk):
    """The results of a thunk as a tuple of arrays (None results dropped)."""
    return tuple(r for r in thunk() if r is not None)


def same_bits(a, b):
    """Bitwise equality of two tuples of arrays (NaN payloads included)."""
    return len(a) == len(b) and all(x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
                                    for x, y in zip(a, b))


def hammer(cases, n_threads=4, seconds=2.0, min_rounds=2):
    """Call every case from ``n_threads`` threads for about ``seconds``; compare with a serial run.

    Returns ``(calls per thread, mismatches)``: ``mismatches`` lists ``(thread, case name)`` for every
    result that differs from the serial result in any bit, and any exception raised.
    """
    expected = [run(thunk) for _, thunk in cases]
    counts = [0] * n_threads
    mismatches = []
    start = threading.Barrier(n_threads)
    deadline = [0.0]

    def worker(t):
        start.wait()
        if t == 0:
            deadline[0] = time.perf_counter() + seconds
        rounds = 0
        order = list(range(len(cases)))
        while True:
            # each thread walks the cases from its own offset, so different kernels overlap
            for j in order[t * len(order) // n_threads:] + order[:t * len(order) // n_threads]:
                name, thunk = cases[j]
                try:
                    got = run(thunk)
                except Exception as exc:  # noqa: BLE001 - reported as a mismatch
                    mismatches.append((t, f"{name}: {type(exc).__name__}: {exc}"))
                    continue
                counts[t] += 1
                if not same_bits(got, expected[j]):
                    mismatches.append((t, name))
            rounds += 1
            if rounds >= min_rounds and deadline[0] and time.perf_counter() > deadline[0]:
                return

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts, mismatches


def main():
    import numba

    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    counts, mismatches = hammer(all_calls(), seconds=seconds)
    print(f"layer {numba.threading_layer()} threads {numba.get_num_threads()} calls {counts} "
          f"mismatches {len(mismatches)}")
    for t, name in mismatches[:20]:
        print(f"  thread {t}: {name}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
