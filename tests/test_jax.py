"""lcnumba.jax: custom_vjp functions over pure_callback, under jit, grad and vmap.

Gradients are checked against float64 finite differences (``jax.test_util.check_grads``, reverse
mode: the functions have a VJP and no JVP), directly, under ``jax.jit`` and under ``jax.vmap``;
forward values must equal lcnumba's NumPy functions bit for bit, also when vmap folds the mapped
axis into the batch or calls lcnumba once per mapped element.
"""

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="the jax extra is not installed: pip install -e '.[jax]'")
jax.config.update("jax_enable_x64", True)  # float64, for finite differences

from jax.test_util import check_grads  # noqa: E402

import lcnumba  # noqa: E402
import lcnumba.jax as lj  # noqa: E402
from lcnumba import table  # noqa: E402
from families import FAMILIES, TRANSPOSED  # noqa: E402

CASES = [("bias", True, dict()),
         ("strided-padded-dilated-grouped", False, dict(stride=2, padding=1, dilation=2, groups=2))]
TRANSPOSE_CASES = [("bias-strided-padded-grouped", True, dict(stride=2, padding=1, output_padding=1, groups=2)),
                   ("dilated-output-padded", False, dict(stride=2, output_padding=1, dilation=2))]


def _arrays(fam, bias, kwargs, dtype=np.float64, seed=0):
    """x (N=2, C=4), w (2 filters, per group if transposed) and b (or None) for ``fam`` with ``kwargs``."""
    rng = np.random.default_rng(seed)
    row = table.family(fam.name)
    transposed = row.kind == "conv_transpose"
    x_shape = ((2, 4, 3, 4) if transposed else (2, 4, 6, 7)) if fam.spatial == 2 else ((2, 4, 5) if transposed
                                                                                       else (2, 4, 9))
    kernel = (2, 3) if fam.spatial == 2 else (3,)
    bank = ((4, 2) if transposed else (2, 4 // kwargs.get("groups", 1))) + kernel
    if fam.sharing == "tiled":
        bank = ((2, 3) if fam.spatial == 2 else (2,)) + bank
    elif fam.sharing == "local" and transposed:  # a bank per input position
        bank = x_shape[2:] + bank
    elif fam.sharing == "local":
        query = getattr(lcnumba, f"{fam.name}_output_shape")
        bank = query(x_shape, kernel if fam.spatial == 2 else kernel[0], 2, **kwargs)[2:] + bank
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(bank).astype(dtype)
    if transposed:  # the bias lies over the output: per filter, and per tile or output position
        y_shape = getattr(lcnumba, f"{fam.name}_output_shape")(x_shape, bank, **kwargs)
        b_shape = y_shape[1:2] + {"shared": (), "tiled": bank[:fam.spatial], "local": y_shape[2:]}[fam.sharing]
    else:
        sizes = dict(zip(row.weight_dims, bank))
        b_shape = tuple(sizes[d] for d in row.bias_dims)
    b = rng.standard_normal(b_shape).astype(dtype) if bias else None
    return x, w, b


def _cases():
    return ([pytest.param(fam, bias, kwargs, id=f"{fam}-{name}") for fam in FAMILIES for name, bias, kwargs in CASES]
            + [pytest.param(fam, bias, kwargs, id=f"{fam}-{name}") for fam in TRANSPOSED
               for name, bias, kwargs in TRANSPOSE_CASES])


def _function(fam, kwargs, bias):
    function = getattr(lj, table.bridge_name(fam.row))
    if bias:
        return lambda x, w, b: function(x, w, b, **kwargs, **fam.mode)
    return lambda x, w: function(x, w, **kwargs, **fam.mode)


@pytest.mark.parametrize("fam,bias,kwargs", _cases())
def test_convolutions_check_grads_plain_jit_and_vmap(fam, bias, kwargs):
    x, w, b = _arrays(fam, bias, kwargs)
    f = _function(fam, kwargs, bias)
    args = (x, w, b) if bias else (x, w)
    check_grads(f, args, order=1, modes=["rev"])
    check_grads(jax.jit(f), args, order=1, modes=["rev"])
    xs = np.stack([x, x[::-1] * 0.5, x + 1.0])  # a mapped axis of 3 in front of N
    in_axes = (0,) + (None,) * (len(args) - 1)
    check_grads(jax.vmap(f, in_axes=in_axes), (xs,) + args[1:], order=1, modes=["rev"])


@pytest.mark.parametrize("fam,bias,kwargs", _cases())
def test_convolutions_equal_the_numpy_api_bitwise(fam, bias, kwargs):
    x, w, b = _arrays(fam, bias, kwargs, np.float32, seed=1)
    f = _function(fam, kwargs, bias)
    args = (x, w, b) if bias else (x, w)
    y = fam.op("forward")(x, w, b, **kwargs, **fam.mode)
    assert np.array_equal(np.asarray(jax.jit(f)(*args)), y)
    dy = np.random.default_rng(2).standard_normal(y.shape).astype(np.float32)
    _, vjp = jax.vjp(f, *args)
    for got, expected in zip(vjp(dy), fam.op("backward")(dy, x, w, b, **kwargs, **fam.mode)):
        assert np.array_equal(np.asarray(got), expected)


def test_vmap_folds_the_mapped_axis_or_runs_each_element():
    fam = next(f for f in FAMILIES if f.name == "local_conv2d")
    x, w, b = _arrays(fam, True, {}, np.float32)
    xs = np.stack([x, 2 * x])
    ws = np.stack([w, -w, 0.5 * w])
    folded = jax.vmap(lj.local_conv2d, in_axes=(0, None, None))(xs, w, b)
    each = jax.vmap(lj.local_conv2d, in_axes=(None, 0, None))(x, ws, b)
    both = jax.jit(jax.vmap(jax.vmap(lj.local_conv2d, in_axes=(None, 0, None)), in_axes=(0, None, None)))(xs, ws, b)
    assert np.array_equal(np.asarray(folded), np.stack([lcnumba.local_conv2d_forward(xi, w, b) for xi in xs]))
    assert np.array_equal(np.asarray(each), np.stack([lcnumba.local_conv2d_forward(x, wi, b) for wi in ws]))
    assert np.array_equal(np.asarray(both), np.stack([[lcnumba.local_conv2d_forward(xi, wi, b) for wi in ws]
                                                      for xi in xs]))
    # Per-example gradients: the weight gradient of each mapped element, not their sum.
    per_example = jax.vmap(jax.grad(lambda x, w: lj.local_conv2d(x, w, b).sum(), argnums=1),
                           in_axes=(0, None))(xs, w)
    ones = np.ones(folded.shape[1:], np.float32)
    for xi, dw in zip(xs, per_example):
        assert np.array_equal(np.asarray(dw), lcnumba.local_conv2d_backward(ones, xi, w, b)[1])


@pytest.mark.parametrize("spatial,kwargs", [(2, dict(kernel_size=2)),
                                            (2, dict(kernel_size=3, stride=2, padding=1, dilation=2,
                                                     ceil_mode=True)),
                                            (1, dict(kernel_size=3, stride=2, padding=1))])
def test_max_pool(spatial, kwargs):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 7, 8)[:2 + spatial])
    name = f"max_pool{spatial}d"
    f = lambda x: getattr(lj, name)(x, **kwargs)  # noqa: E731
    assert np.array_equal(np.asarray(f(x)), getattr(lcnumba, f"{name}_forward")(x, **kwargs))
    check_grads(f, (x,), order=1, modes=["rev"])
    check_grads(jax.jit(f), (x,), order=1, modes=["rev"])
    check_grads(jax.vmap(f), (np.stack([x, -x]),), order=1, modes=["rev"])


def _mask():
    """Valid descriptors of x (2, 5, 3, 4): the first sample keeps its first row only."""
    mask = np.ones((2, 3, 4), bool)
    mask[0, 1:] = False
    return mask


@pytest.mark.parametrize("ghosts,options", [(0, dict(normalize_input=True)), (2, dict(normalize_input=False)),
                                            (1, dict(intra_normalize=False, masked=True)),
                                            (0, dict(final_normalize=False, masked=True))])
def test_netvlad(ghosts, options):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 5, 3, 4))
    w, b, c = rng.standard_normal((3 + ghosts, 5)), rng.standard_normal(3 + ghosts), rng.standard_normal((3, 5))
    switches = {key: value for key, value in options.items() if key != "masked"}
    mask = _mask() if options.get("masked") else None
    f = lambda *a: lj.netvlad(*a, **switches, mask=mask)  # noqa: E731
    assert np.array_equal(np.asarray(f(x, w, b, c)), lcnumba.netvlad_forward(x, w, b, c, **switches, mask=mask))
    check_grads(f, (x, w, b, c), order=1, modes=["rev"])
    check_grads(jax.jit(f), (x, w, b, c), order=1, modes=["rev"])
    check_grads(jax.vmap(f, in_axes=(0, None, None, None)), (np.stack([x, 2 * x]), w, b, c), order=1, modes=["rev"])
    if mask is not None:  # a mapped mask: folded into the batch with x; an integer mask as a bool one
        masks = np.stack([mask, ~mask]).astype(np.int32)
        g = jax.jit(jax.vmap(lambda x, m: lj.netvlad(x, w, b, c, **switches, mask=m)))
        ys = g(np.stack([x, -x]), masks)
        for y, xi, mi in zip(ys, (x, -x), masks):
            assert np.array_equal(np.asarray(y), lcnumba.netvlad_forward(xi, w, b, c, **switches, mask=mi != 0))
        check_grads(lambda xs: g(xs, masks), (np.stack([x, -x]),), order=1, modes=["rev"])


def _part_arrays(name, dtype=np.float64, seed=5):
    rng = np.random.default_rng(seed)
    if name == "netvlad_pca":
        return tuple(rng.standard_normal(shape).astype(dtype) for shape in ((3, 8), (4, 8), (4,)))
    logits = rng.standard_normal((2, 3, 3, 4))
    assignment = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return (rng.standard_normal((2, 5, 3, 4)).astype(dtype), assignment.astype(dtype),
            rng.standard_normal((3, 5)).astype(dtype))


@pytest.mark.parametrize("name,kwargs", [("vlad_aggregate", dict()), ("vlad_aggregate", dict(intra_normalize=False)),
                                         ("vlad_aggregate", dict(final_normalize=False)), ("netvlad_pca", dict())])
def test_netvlad_parts(name, kwargs):
    arrays = _part_arrays(name)
    f = lambda *a: getattr(lj, name)(*a, **kwargs)  # noqa: E731
    check_grads(jax.jit(f), arrays, order=1, modes=["rev"])
    # per-sample arrays mapped (x and the assignment, or v); the rest shared
    per_sample = 2 if name == "vlad_aggregate" else 1
    mapped = tuple(np.stack([a, 0.5 * a]) for a in arrays[:per_sample]) + arrays[per_sample:]
    in_axes = (0,) * per_sample + (None,) * (len(arrays) - per_sample)
    check_grads(jax.vmap(f, in_axes=in_axes), mapped, order=1, modes=["rev"])
    single = _part_arrays(name, np.float32, seed=6)
    forward, backward = getattr(lcnumba, f"{name}_forward"), getattr(lcnumba, f"{name}_backward")
    y = forward(*single, **kwargs)
    assert np.array_equal(np.asarray(jax.jit(f)(*single)), y)
    dy = np.random.default_rng(7).standard_normal(y.shape).astype(np.float32)
    _, vjp = jax.vjp(f, *single)
    for got, expected in zip(vjp(dy), backward(dy, *single, **kwargs)):
        assert np.array_equal(np.asarray(got), expected)


def test_errors_are_the_core_messages_at_trace_time():
    fam = next(f for f in FAMILIES if f.name == "local_conv2d")
    x, w, b = _arrays(fam, True, {})
    with pytest.raises(TypeError, match="x: expected dtype float64 like w and b, got dtype float32"):
        lj.local_conv2d(x.astype(np.float32), w, b)
    with pytest.raises(TypeError, match="x: expected dtype float32 or float64"):
        lj.max_pool2d(x.astype(np.int32), 2)
    with pytest.raises(ValueError, match="w: expected a filter bank per output position"):
        jax.jit(lj.local_conv2d)(x, w[:2], b)
    with pytest.raises(ValueError, match="tile_mode"):
        lj.tiled_conv2d(x, np.ones((2, 2, 2, 4, 3, 3)), tile_mode="spiral")


def test_grad_of_grad_is_refused():
    x = np.random.default_rng(5).standard_normal((1, 1, 5, 5))
    w = np.random.default_rng(6).standard_normal((3, 3, 1, 1, 3, 3))
    gradient = jax.grad(lambda x: lj.local_conv2d(x, w).sum())
    for second in (jax.jacfwd, jax.grad):
        with pytest.raises(NotImplementedError, match="double backward is not supported"):
            second(lambda x: gradient(x).sum() if second is jax.grad else gradient(x))(x)


def test_arrays_on_a_gpu_are_computed_on_the_host():
    gpus = [device for device in jax.devices() if device.platform == "gpu"]
    if not gpus:
        pytest.skip("no JAX GPU device (a CUDA build of jaxlib and a GPU are needed; Numba's simulator cannot "
                    "hold JAX arrays)")
    fam = next(f for f in FAMILIES if f.name == "local_conv2d")
    x, w, b = (jax.device_put(a, gpus[0]) for a in _arrays(fam, True, {}))
    y = jax.jit(lj.local_conv2d)(x, w, b)
    assert np.array_equal(np.asarray(y), lcnumba.local_conv2d_forward(*(np.asarray(a) for a in (x, w, b))))


@pytest.mark.parametrize("mode", ["reflect", "circular"])
def test_padding_modes(mode):
    """``padding_mode`` in JAX: the NumPy API's result, and gradients by finite differences under ``jit``."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 5))
    w = rng.standard_normal((2, 2, 4, 3, 3, 3))
    conv = lj.FUNCTIONS["tiled_conv2d"]
    y = conv(x, w, None, padding=1, padding_mode=mode)
    np.testing.assert_array_equal(np.asarray(y), lcnumba.tiled_conv2d_forward(x, w, padding=1, padding_mode=mode))
    check_grads(jax.jit(lambda a, b: conv(a, b, None, padding=1, padding_mode=mode)), (x, w), order=1, modes=("rev",))
