"""Edge geometries, run once more with every array access of the CPU kernels bounds-checked.

The kernels trust their callers and do not check indices; a geometry the
checks let through but the index arithmetic gets wrong would read or write
outside an array silently. The ``test_edge_*`` tests below call every kernel
on the geometries where that is most likely (outputs that read only
padding, an empty input plane with a non-empty output, kernels as large as
the padded input, dilations that skip the whole input, strides wider than
the input, tiles beyond the output, depthwise groups, batches of one and
zero, windows that cover only padding, descriptors of one) and compare with
the references.

``test_kernels_under_boundscheck`` runs them again in a child process with
``NUMBA_BOUNDSCHECK=1``, together with the stride/padding limit tests of
``test_huge.py`` and the float64 reference tests of the families. Numba
does not check bounds inside ``prange`` bodies, so the child compiles the
kernels with ``parallel=False`` (``prange`` is then ``range``, the index
arithmetic is the same): an out-of-range index raises ``IndexError``, as
``test_an_out_of_range_read_raises_in_the_child`` shows there. The
child caches these kernels apart, in ``tests/__pycache__/numba-boundscheck``
(Numba's cache key records neither flag), so they are compiled once, not on
every run.

On CUDA the simulator raises on a positive out-of-range index (a negative one
wraps, and then the comparison with the CPU fails): ``test_edge_*_cuda`` run
the same geometries through the CUDA kernels, with blocks patched down to 4
threads so that the tiny inputs span many blocks.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lcnumba
from lcnumba import testing

HERE = Path(__file__).resolve().parent
CACHE = HERE / "__pycache__" / "numba-boundscheck"

# ---------------------------------------------------------------- edge geometries

CONV_EDGES = {  # id: (family, x shape, weight shape, params)
    "kernel-is-input": ("conv2d", (2, 3, 4, 5), (2, 3, 4, 5), {}),
    "padding-beyond-kernel": ("conv2d", (1, 2, 3, 3), (2, 2, 2, 2), dict(padding=3)),
    "dilation-spans-padded-input": ("conv2d", (1, 1, 3, 3), (1, 1, 2, 2), dict(padding=1, dilation=4)),
    "stride-beyond-kernel": ("conv2d", (2, 2, 7, 9), (3, 2, 2, 1), dict(stride=(4, 5), padding=((2, 0), (0, 3)))),
    "empty-plane-padded": ("conv2d", (2, 2, 0, 4), (3, 2, 1, 1), dict(padding=1)),
    "depthwise": ("conv2d", (2, 4, 5, 5), (4, 1, 3, 3), dict(groups=4, padding="same", dilation=2)),
    "batch-zero": ("conv2d", (0, 2, 5, 5), (3, 2, 3, 3), {}),
    "tiles-beyond-output": ("tiled_conv2d", (2, 2, 4, 5), (4, 5, 3, 2, 3, 3), dict(tile_mode="periodic")),
    "tiles-uneven-block": ("tiled_conv2d", (1, 2, 9, 8), (2, 3, 4, 2, 2, 3), dict(stride=(2, 1), tile_mode="block")),
    "tiles-block-beyond": ("tiled_conv2d", (1, 2, 4, 4), (3, 4, 2, 2, 2, 2), dict(tile_mode="block")),
    "local-strided-dilated": ("local_conv2d", (2, 2, 9, 10), (4, 4, 2, 2, 2, 3), dict(stride=3, padding=2, dilation=2)),
    "local-one-position": ("local_conv2d", (3, 2, 2, 2), (1, 1, 4, 1, 4, 4), dict(padding=1, groups=2)),
    "1d-length-one": ("conv1d", (2, 2, 1), (3, 2, 3), dict(padding=1)),
    "1d-tiled-block": ("tiled_conv1d", (2, 2, 7), (3, 2, 2, 2), dict(stride=2, padding=(0, 2), tile_mode="block")),
    "1d-local-dilated": ("local_conv1d", (1, 2, 6), (2, 2, 2, 3), dict(padding=2, dilation=3, stride=3)),
}

POOL_EDGES = {  # id: (x shape, params)
    "kernel-is-padded-input": ((2, 2, 3, 5), dict(kernel_size=(5, 7), padding=(2, 3))),
    "ceil-drops-last": ((1, 2, 6, 7), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    "windows-in-padding-only": ((1, 2, 1, 4), dict(kernel_size=2, stride=1, padding=1, dilation=2)),
    "stride-beyond-input": ((2, 1, 4, 3), dict(kernel_size=(1, 2), stride=(5, 7), padding=(0, 1), ceil_mode=True)),
    "stride-two-odd-width": ((1, 3, 5, 9), dict(kernel_size=3, stride=2)),
    "1d-length-one": ((2, 2, 1), dict(kernel_size=1)),
    "1d-dilated": ((1, 2, 9), dict(kernel_size=3, stride=2, padding=1, dilation=3, ceil_mode=True)),
}

NETVLAD_EDGES = {  # id: (x shape, K, G, normalize_input)
    "one-descriptor": ((2, 3, 1), 2, 1, True),
    "size-one-descriptors": ((2, 1, 2, 3), 1, 0, False),
    "more-ghosts-than-clusters": ((1, 4, 5), 1, 3, True),
    "batch-zero": ((0, 3, 4), 2, 0, True),
}


def _conv_arrays(case, seed=0):
    family, x_shape, w_shape, params = case
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    y_shape = getattr(testing, f"{family}_forward")(np.zeros((1,) + x_shape[1:]), w, **params).shape
    if family in ("conv2d", "conv1d"):
        b_shape = (w_shape[0],)
    elif len(x_shape) == 4:
        b_shape = (w_shape[2], w_shape[0], w_shape[1])
    else:
        b_shape = (w_shape[1], w_shape[0])
    return x, w, rng.standard_normal(b_shape), rng.standard_normal((x_shape[0],) + y_shape[1:])


def _close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def _check_conv(case, to_device=None, from_device=None):
    family, x_shape, w_shape, params = case
    x, w, b, dy = _conv_arrays(case)
    dev = to_device or (lambda a: a)
    host = from_device or (lambda a: a)
    op = lambda part: getattr(lcnumba, f"{family}_{part}")  # noqa: E731
    ref = lambda part: getattr(testing, f"{family}_{part}")  # noqa: E731
    bias_params = {k: v for k, v in params.items() if k == "tile_mode"}
    _close(host(op("forward")(dev(x), dev(w), dev(b), **params)), ref("forward")(x, w, b, **params))
    _close(host(op("backward_input")(dev(dy), dev(w), x.shape, **params)), ref("backward_input")(dy, w, x.shape, **params))
    _close(host(op("backward_weight")(dev(dy), dev(x), w.shape, **params)),
           ref("backward_weight")(dy, x, w.shape, **params))
    if dy.shape[0] and dy.size:
        _close(host(op("backward_bias")(dev(dy), b.shape, **bias_params)), ref("backward_bias")(dy, b.shape, **bias_params))


def _check_pool(case, to_device=None, from_device=None):
    x_shape, params = case
    dev = to_device or (lambda a: a)
    host = from_device or (lambda a: a)
    name = "max_pool2d" if len(x_shape) == 4 else "max_pool1d"
    rng = np.random.default_rng(1)
    x = np.round(2 * rng.standard_normal(x_shape))  # ties
    y, idx = getattr(lcnumba, f"{name}_forward")(dev(x), return_indices=True, **params)
    y_ref, idx_ref = getattr(testing, f"{name}_forward")(x, return_indices=True, **params)
    np.testing.assert_array_equal(host(y), y_ref)
    np.testing.assert_array_equal(host(idx), idx_ref)
    np.testing.assert_array_equal(host(getattr(lcnumba, f"{name}_forward")(dev(x), **params)), y_ref)
    dy = rng.standard_normal(y_ref.shape)
    random_idx = rng.integers(-1, int(np.prod(x_shape[2:])), size=idx_ref.shape)  # any cell, or -1
    for indices in (idx_ref, random_idx):
        _close(host(getattr(lcnumba, f"{name}_backward")(dev(dy), dev(indices), x_shape)),
               getattr(testing, f"{name}_backward")(dy, indices, x_shape))


def _check_netvlad(case, to_device=None, from_device=None):
    x_shape, k, g, normalize_input = case
    dev = to_device or (lambda a: a)
    host = from_device or (lambda a: a)
    rng = np.random.default_rng(2)
    d = x_shape[1]
    x, w, b, c = (rng.standard_normal(s) for s in (x_shape, (k + g, d), (k + g,), (k, d)))
    dy = rng.standard_normal((x_shape[0], k * d))
    kw = dict(normalize_input=normalize_input)
    y = host(lcnumba.netvlad_forward(dev(x), dev(w), dev(b), dev(c), **kw))
    if x_shape[0]:
        _close(y, testing.netvlad_forward(x, w, b, c, **kw))
        for got, want in zip(lcnumba.netvlad_backward(dev(dy), dev(x), dev(w), dev(b), dev(c), **kw),
                             testing.netvlad_backward(dy, x, w, b, c, **kw)):
            _close(host(got), want)
    else:
        assert y.shape == (0, k * d)
        grads = lcnumba.netvlad_backward(dev(dy), dev(x), dev(w), dev(b), dev(c), **kw)
        assert [host(a).shape for a in grads] == [x_shape, w.shape, b.shape, c.shape]


@pytest.mark.parametrize("case", list(CONV_EDGES), ids=str)
def test_edge_conv(case):
    _check_conv(CONV_EDGES[case])


@pytest.mark.parametrize("case", list(POOL_EDGES), ids=str)
def test_edge_pool(case):
    _check_pool(POOL_EDGES[case])


@pytest.mark.parametrize("case", list(NETVLAD_EDGES), ids=str)
def test_edge_netvlad(case):
    _check_netvlad(NETVLAD_EDGES[case])


# ---------------------------------------------------------------- the same on the CUDA simulator (or a GPU)

CUDA_CONV = ["padding-beyond-kernel", "empty-plane-padded", "depthwise", "tiles-uneven-block",
             "local-strided-dilated", "1d-tiled-block"]
CUDA_POOL = ["kernel-is-padded-input", "windows-in-padding-only", "stride-beyond-input", "1d-dilated"]
CUDA_NETVLAD = ["one-descriptor", "more-ghosts-than-clusters"]


@pytest.fixture
def cuda_arrays(monkeypatch):
    cuda = pytest.importorskip("numba.cuda")
    if not cuda.is_available():
        pytest.skip("no CUDA device and no simulator")
    from lcnumba import config

    monkeypatch.setattr(config, "THREADS_PER_BLOCK", 4)
    return (lambda a: cuda.to_device(np.ascontiguousarray(a))), (lambda a: a.copy_to_host())


@pytest.mark.parametrize("case", CUDA_CONV, ids=str)
def test_edge_conv_cuda(case, cuda_arrays):
    _check_conv(CONV_EDGES[case], *cuda_arrays)


@pytest.mark.parametrize("case", CUDA_POOL, ids=str)
def test_edge_pool_cuda(case, cuda_arrays):
    _check_pool(POOL_EDGES[case], *cuda_arrays)


@pytest.mark.parametrize("case", CUDA_NETVLAD, ids=str)
def test_edge_netvlad_cuda(case, cuda_arrays):
    _check_netvlad(NETVLAD_EDGES[case], *cuda_arrays)


# ---------------------------------------------------------------- the child process

def test_an_out_of_range_read_raises_in_the_child():
    """Proof that the child's kernels are bounds-checked: a bias for 1 tile where the kernel reads 4."""
    if os.environ.get("NUMBA_BOUNDSCHECK") != "1":
        pytest.skip("runs in the child of test_kernels_under_boundscheck (NUMBA_BOUNDSCHECK=1)")
    from lcnumba.cpu import conv

    x, w, y = np.ones((1, 1, 4, 4)), np.ones((4, 1, 9)), np.zeros((1, 1, 2, 2))
    with pytest.raises(IndexError):
        conv.forward(x, w, np.zeros((1, 1)), 2, 2, True, 3, 3, 1, 1, 0, 0, 1, 1, 1, 1, y)


#: The child runs the probe above, the CPU edge tests, the index-limit tests of test_huge.py and the
#: families' float64 reference tests (one compilation of each kernel).
CHILD_FILES = ["tests/test_boundscheck.py", "tests/test_huge.py", "tests/test_conv.py", "tests/test_pool.py",
               "tests/test_netvlad.py"]
CHILD_SELECTION = ("(out_of_range_read or test_edge) and not cuda or largest "
                   "or (matches_reference and float64)")

BOOTSTRAP = """
import sys
import numba

_njit = numba.njit


def njit(*args, **kwargs):
    kwargs["parallel"] = False  # Numba skips bounds checks inside prange bodies
    return _njit(*args, **kwargs)


numba.njit = njit
import pytest
sys.exit(pytest.main(sys.argv[1:]))
"""


def test_kernels_under_boundscheck():
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(CACHE))
    result = subprocess.run([sys.executable, "-c", BOOTSTRAP, "-q", "-x", "-p", "no:cacheprovider", "-rs",
                             *CHILD_FILES, "-k", CHILD_SELECTION], capture_output=True, text=True, timeout=1200,
                            env=env, cwd=HERE.parent)
    tail = result.stdout[-3000:] + result.stderr[-2000:]
    assert result.returncode == 0, f"under NUMBA_BOUNDSCHECK=1:\n{tail}"
    summary = result.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, tail
    print(f"\nunder NUMBA_BOUNDSCHECK=1: {summary}")
