"""Small calls of every CPU function, shared by the thread, determinism and boundscheck tests.

``calls(dtype)`` returns ``(name, thunk)`` pairs; each thunk runs one public
function (or a forward and its backward) on fixed inputs and returns its
results as a tuple of arrays, so two runs can be compared bit for bit. The
shapes are small, but large enough that every kernel splits its work into
several tasks (several segments, batch chunks, weight-gradient chunks and
planes), so that the thread count changes how the work is distributed.

Run as a script, it hammers the calls from several Python threads and
compares every result with a serial run (used in a child process with
``NUMBA_THREADING_LAYER=workqueue`` by ``test_threads.py``).
"""

import sys
import threading
import time

import numpy as np

import lcnumba


def _rng(seed):
    return np.random.default_rng(seed)


def _conv_calls(dtype):
    rng = _rng(0)
    x = rng.standard_normal((3, 4, 9, 10)).astype(dtype)
    x1 = rng.standard_normal((3, 4, 17)).astype(dtype)
    out = []
    specs = [  # (family, weight, bias, params, spatial)
        ("conv2d", (4, 2, 3, 3), (4,), dict(stride=1, padding=1, groups=2), 2),
        ("conv2d", (6, 4, 2, 3), (6,), dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2)), 2),
        ("tiled_conv2d", (2, 3, 4, 4, 3, 3), (4, 2, 3), dict(padding="same", tile_mode="periodic"), 2),
        ("tiled_conv2d", (3, 2, 4, 2, 3, 2), (4, 3, 2), dict(stride=2, groups=2, tile_mode="block"), 2),
        ("local_conv2d", (7, 8, 4, 4, 3, 3), (4, 7, 8), dict(), 2),
        ("local_conv2d", (5, 4, 2, 2, 3, 3), (2, 5, 4), dict(stride=2, padding=1, dilation=(1, 2), groups=2), 2),
        ("conv1d", (5, 4, 3), (5,), dict(padding="same"), 1),
        ("tiled_conv1d", (3, 4, 2, 3), (4, 3), dict(stride=2, groups=2, tile_mode="block"), 1),
        ("local_conv1d", (15, 4, 4, 3), (4, 15), dict(), 1),
    ]
    for i, (family, w_shape, b_shape, params, spatial) in enumerate(specs):
        xi = x if spatial == 2 else x1
        w = rng.standard_normal(w_shape).astype(dtype)
        b = rng.standard_normal(b_shape).astype(dtype)
        forward = getattr(lcnumba, f"{family}_forward")
        y = forward(xi, w, b, **params)
        dy = rng.standard_normal(y.shape).astype(dtype)
        start = rng.standard_normal(w.shape).astype(dtype)
        name = f"{family}[{i}]"
        out.append((f"{name} forward", lambda f=forward, xi=xi, w=w, b=b, p=params: (f(xi, w, b, **p),)))
        backward_input = getattr(lcnumba, f"{family}_backward_input")
        backward_weight = getattr(lcnumba, f"{family}_backward_weight")
        backward_bias = getattr(lcnumba, f"{family}_backward_bias")
        bias_params = {k: v for k, v in params.items() if k == "tile_mode"}
        out.append((f"{name} backward_input",
                    lambda f=backward_input, dy=dy, w=w, s=xi.shape, p=params: (f(dy, w, s, **p),)))
        out.append((f"{name} backward_weight",
                    lambda f=backward_weight, dy=dy, xi=xi, s=w.shape, p=params: (f(dy, xi, s, **p),)))
        out.append((f"{name} backward_weight accumulate",
                    lambda f=backward_weight, dy=dy, xi=xi, s=w.shape, p=params, start=start:
                    (f(dy, xi, s, out=start.copy(), accumulate=True, **p),)))
        out.append((f"{name} backward_bias", lambda f=backward_bias, dy=dy, s=b.shape, p=bias_params: (f(dy, s, **p),)))
        backward = getattr(lcnumba, f"{family}_backward")
        out.append((f"{name} backward", lambda f=backward, dy=dy, xi=xi, w=w, b=b, p=params: f(dy, xi, w, b, **p)))
    return out


def _pool_calls(dtype):
    rng = _rng(1)
    x = rng.standard_normal((3, 5, 11, 12)).astype(dtype)
    x[0, 0, 2, 3] = np.nan
    x1 = np.round(rng.standard_normal((3, 5, 23))).astype(dtype)  # ties
    out = []
    for i, (xi, params) in enumerate([
        (x, dict(kernel_size=3, stride=2, padding=1)),
        (x, dict(kernel_size=(2, 3), stride=(1, 2), dilation=(2, 1), ceil_mode=True)),
        (x1, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ]):
        family = "max_pool2d" if xi.ndim == 4 else "max_pool1d"
        forward = getattr(lcnumba, f"{family}_forward")
        backward = getattr(lcnumba, f"{family}_backward")
        y, idx = forward(xi, return_indices=True, **params)
        dy = rng.standard_normal(y.shape).astype(dtype)
        name = f"{family}[{i}]"
        out.append((f"{name} forward", lambda f=forward, xi=xi, p=params: (f(xi, **p),)))
        out.append((f"{name} forward indices", lambda f=forward, xi=xi, p=params: f(xi, return_indices=True, **p)))
        out.append((f"{name} backward", lambda f=backward, dy=dy, idx=idx, s=xi.shape: (f(dy, idx, s),)))
    return out


def _netvlad_calls(dtype):
    rng = _rng(2)
    out = []
    for i, (x_shape, k, g, normalize) in enumerate([((5, 8, 3, 4), 4, 2, True), ((3, 6, 10), 3, 0, False)]):
        x = rng.standard_normal(x_shape).astype(dtype)
        w = rng.standard_normal((k + g, x_shape[1])).astype(dtype)
        b = rng.standard_normal(k + g).astype(dtype)
        c = rng.standard_normal((k, x_shape[1])).astype(dtype)
        dy = rng.standard_normal((x_shape[0], k * x_shape[1])).astype(dtype)
        kw = dict(normalize_input=normalize)
        out.append((f"netvlad[{i}] forward", lambda x=x, w=w, b=b, c=c, kw=kw: (lcnumba.netvlad_forward(x, w, b, c, **kw),)))
        out.append((f"netvlad[{i}] backward",
                    lambda dy=dy, x=x, w=w, b=b, c=c, kw=kw: lcnumba.netvlad_backward(dy, x, w, b, c, **kw)))
    return out


def calls(dtype=np.float64):
    """``(name, thunk)`` for every CPU function of the public API, for one dtype."""
    return _conv_calls(dtype) + _pool_calls(dtype) + _netvlad_calls(dtype)


def all_calls():
    return calls(np.float32) + calls(np.float64)


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
