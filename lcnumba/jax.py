"""lcnumba in JAX: every op family as a differentiable function (extra ``jax``).

``lcnumba.jax.local_conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1)`` and its
siblings, one per family of the op table (``conv2d``, ``tiled_conv2d``, ``local_conv2d``, the 1-D
forms, ``max_pool2d``, ``max_pool1d``, ``netvlad``, ``vlad_aggregate``, ``netvlad_pca``), take the
arguments of lcnumba's NumPy forward functions; the transposed families are named and ordered as
PyTorch's ``conv_transpose2d`` (``local_conv_transpose2d(x, w, b=None, stride=1, padding=0,
output_padding=0, groups=1, dilation=1)``, ``tiled_conv_transpose2d``, ``conv_transpose2d`` and the
1-D forms). All are ``jax.custom_vjp`` functions:

- the forward and the backward call lcnumba's public functions (the forward pass and the
  hand-derived backward pass) on the host through ``jax.pure_callback``, so they run under
  ``jax.jit`` and ``jax.grad`` on any JAX backend (device arrays are copied to the host);
- output shapes come from ``lcnumba.geometry`` when the function is traced, and so do the
  errors: a wrong shape, rank or dtype raises the NumPy function's message at trace time;
- under ``jax.vmap`` the callbacks see the mapped axes in front (``vmap_method="expand_dims"``):
  when only the per-sample arrays (``x``, ``dy``, a NetVLAD ``mask``, an ``assignment``) are mapped,
  the mapped axes are folded into the batch N and lcnumba is called once; otherwise (mapped weights,
  and the weight gradients of a mapped backward, which are per mapped element) it is called once per
  mapped element.

The functions are differentiable once: differentiating a gradient raises an error that says so.
Max-pooling's backward recomputes the argmax indices from ``x`` instead of keeping int64 indices,
which JAX holds only with ``jax_enable_x64``.
``import lcnumba`` alone never imports JAX.
"""

import functools

import jax
import numpy as np

from . import checks, geometry, table
from .ops.public import FUNCTIONS as _PUBLIC


def _hashable(value):
    """A parameter as a hashable value (lists become tuples): the static arguments of a traced function."""
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(item) for item in value)
    return value


def _check_arrays(arrays):
    """The core's checks of ``{name: (array or None, rank)}`` at trace time: rank, float dtype, one dtype."""
    for name, (array, rank) in arrays.items():
        if array is not None:
            checks.array_rank(name, np.shape(array), rank)
            checks.float_dtype(name, array.dtype)
    return checks.common_dtype({name: array for name, (array, _) in arrays.items()})


# ---------------------------------------------------------------- host calls under vmap


def _host(run, ranks, fold):
    """A ``pure_callback`` target: ``run(*arrays)``, also on arrays with mapped axes in front.

    ``ranks`` are the ranks of the arguments without mapped axes. With ``fold`` (an op whose outputs are
    all per sample, and whose arguments other than the first ``fold`` ones are unmapped), the mapped
    axes are folded into the batch axis of the first ``fold`` arguments: one call. Otherwise ``run``
    is called once per mapped element and the outputs are stacked.
    """
    def callback(*arrays):
        mapped = arrays[0].ndim - ranks[0]
        if mapped == 0:
            return run(*arrays)
        batch = np.broadcast_shapes(*(a.shape[:mapped] for a in arrays))
        if fold and all(np.prod(a.shape[:mapped]) == 1 for a in arrays[fold:]):
            size = int(np.prod(batch))
            folded = [np.broadcast_to(a, batch + a.shape[mapped:]).reshape((-1,) + a.shape[mapped + 1:])
                      for a in arrays[:fold]]
            shared = [a.reshape(a.shape[mapped:]) for a in arrays[fold:]]
            outputs = run(*folded, *shared)
            unfold = lambda y: y.reshape(batch + (y.shape[0] // size,) + y.shape[1:])  # noqa: E731
            return tuple(map(unfold, outputs)) if isinstance(outputs, tuple) else unfold(outputs)
        results = []
        for index in np.ndindex(*batch):
            args = [a[tuple(i if s > 1 else 0 for i, s in zip(index, a.shape[:mapped]))] for a in arrays]
            results.append(run(*args))
        if isinstance(results[0], tuple):
            return tuple(np.stack(parts).reshape(batch + parts[0].shape) for parts in zip(*results))
        return np.stack(results).reshape(batch + results[0].shape)

    return callback


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2, 3))
def _call(run, ranks, fold, result, *arrays):
    """``run`` on the host through ``jax.pure_callback``; a forward-mode derivative of it raises a clear error.

    JAX asks for one only to differentiate a gradient (reverse mode runs the callbacks as they are).
    """
    return jax.pure_callback(_host(run, ranks, fold), result, *arrays, vmap_method="expand_dims")


@_call.defjvp
def _derivative_of_a_callback(run, ranks, fold, result, primals, tangents):
    raise NotImplementedError(
        "lcnumba.jax: double backward is not supported. lcnumba's backward passes are hand-derived first "
        "derivatives with no derivatives of their own, so a gradient computed through lcnumba cannot be "
        "differentiated again (jax.grad of jax.grad, jax.hessian, jax.jacfwd of a gradient).")


# ---------------------------------------------------------------- the convolution family


def _conv_functions(fam):
    forward, backward = _PUBLIC[f"{fam.name}_forward"], _PUBLIC[f"{fam.name}_backward"]

    def host_forward(kwargs, has_bias):
        def run(x, w, b=None):
            return forward(x, w, b, **kwargs)
        return run

    def host_backward(kwargs, has_bias):
        def run(dy, x, w, b=None):
            dx, dw, db = backward(dy, x, w, b, **kwargs)
            return (dx, dw, db) if has_bias else (dx, dw)
        return run

    def ranks(has_bias):
        return (fam.x_ndim, fam.weight_ndim) + ((fam.bias_ndim,) if has_bias else ())

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
    def op(static, out_shape, x, w, b):
        return run_forward(static, out_shape, x, w, b)

    def run_forward(static, out_shape, x, w, b):
        kwargs, has_bias = dict(static), b is not None
        arrays = (x, w, b) if has_bias else (x, w)
        return _call(host_forward(kwargs, has_bias), ranks(has_bias), 1, jax.ShapeDtypeStruct(out_shape, x.dtype),
                     *arrays)

    def op_forward(static, out_shape, x, w, b):
        return run_forward(static, out_shape, x, w, b), (x, w, b)

    def op_backward(static, out_shape, residuals, dy):
        x, w, b = residuals
        kwargs, has_bias = dict(static), b is not None
        arrays = (dy, x, w, b) if has_bias else (dy, x, w)
        shapes = tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in arrays[1:])
        grads = _call(host_backward(kwargs, has_bias), (fam.x_ndim,) + ranks(has_bias), None, shapes, *arrays)
        return tuple(grads) if has_bias else (grads[0], grads[1], None)

    op.defvjp(op_forward, op_backward)
    return op


def _plan(fam, x, w, kwargs):
    """The plan of a call of ``fam`` (a convolution or a transposed family) at trace time, with its checks."""
    shapes, tile_mode = (tuple(x.shape), tuple(w.shape)), kwargs.get("tile_mode", "periodic")
    if fam.kind == "conv_transpose":
        return geometry.conv_transpose_plan(fam, *shapes, kwargs["stride"], kwargs["padding"], kwargs["output_padding"],
                                            kwargs["dilation"], kwargs["groups"], tile_mode, x_name="x", w_name="w")
    return geometry.conv_plan(fam, *shapes, kwargs["stride"], kwargs["padding"], kwargs["dilation"], kwargs["groups"],
                              tile_mode, x_name="x", w_name="w", padding_mode=kwargs.get("padding_mode", "zeros"))


def _conv_call(fam):
    """``call(x, w, b, kwargs)``: ``fam``'s differentiable forward for the keyword arguments of its NumPy forward."""
    op = _conv_functions(fam)
    banks = {"shared": "", "tiled": " and tile",
             "local": " and output position" if fam.kind == "conv_transpose" else " and tile"}[fam.sharing]

    def call(x, w, b, kwargs):
        _check_arrays({"x": (x, fam.x_ndim), "w": (w, fam.weight_ndim), "b": (b, fam.bias_ndim)})
        plan = _plan(fam, x, w, kwargs)
        if b is not None:
            checks.shape_equal(b, "b", plan.bias_shape, "one bias per filter" + banks)
        return op(_hashable(tuple(kwargs.items())), plan.output_shape, x, w, b)

    return call


def _conv(fam):
    call = _conv_call(fam)
    if fam.has_tiles:
        def function(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, tile_mode="periodic",
                     padding_mode="zeros"):
            return call(x, w, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                                      tile_mode=tile_mode, padding_mode=padding_mode))
    else:
        def function(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
            return call(x, w, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                                      padding_mode=padding_mode))

    tile = (', tile_mode="periodic"' if fam.has_tiles else "") + ', padding_mode="zeros"'
    function.__doc__ = f"""{fam.summary[0].upper()}{fam.summary[1:]}, differentiable in JAX.

``{fam.name}(x, w, b=None, stride=1, padding=0, dilation=1, groups=1{tile})``: the arguments and layouts
of :func:`lcnumba.{fam.name}_forward` (``w`` of shape {fam.layout(fam.weight_dims)}, ``b`` of shape
{fam.layout(fam.bias_dims)}); the gradients of ``x``, ``w`` and ``b`` come from
:func:`lcnumba.{fam.name}_backward`.
"""
    return function


def _conv_transpose(fam):
    call = _conv_call(fam)
    if fam.has_tiles:
        def function(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
                     tile_mode="periodic"):
            return call(x, w, b, dict(stride=stride, padding=padding, output_padding=output_padding,
                                      dilation=dilation, groups=groups, tile_mode=tile_mode))
    else:
        def function(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
            return call(x, w, b, dict(stride=stride, padding=padding, output_padding=output_padding,
                                      dilation=dilation, groups=groups))

    name, tile = table.bridge_name(fam), ', tile_mode="periodic"' if fam.has_tiles else ""
    function.__doc__ = f"""{fam.summary[0].upper()}{fam.summary[1:]}, differentiable in JAX.

``{name}(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1{tile})``: the
parameters of PyTorch's ``conv_transpose{fam.spatial}d`` in its order, with the layouts of
:func:`lcnumba.{fam.name}_forward` (``w`` of shape {fam.layout(fam.weight_dims)}, ``b`` of shape
{fam.layout(fam.bias_dims)}); the gradients of ``x``, ``w`` and ``b`` come from
:func:`lcnumba.{fam.name}_backward`.
"""
    return function


# ---------------------------------------------------------------- max-pooling


def _pool(fam):
    forward, backward = _PUBLIC[f"{fam.name}_forward"], _PUBLIC[f"{fam.name}_backward"]
    shape_query = getattr(geometry, f"{fam.name}_output_shape")

    def host_forward(kwargs):
        return lambda x: forward(x, **kwargs)

    def host_backward(kwargs):
        def run(dy, x):
            _, indices = forward(x, return_indices=True, **kwargs)
            return backward(dy, indices, x.shape)
        return run

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
    def op(static, out_shape, x):
        return _call(host_forward(dict(static)), (fam.x_ndim,), 1, jax.ShapeDtypeStruct(out_shape, x.dtype), x)

    def op_forward(static, out_shape, x):
        return op(static, out_shape, x), x

    def op_backward(static, out_shape, x, dy):
        return (_call(host_backward(dict(static)), (fam.x_ndim, fam.x_ndim), 2,
                      jax.ShapeDtypeStruct(x.shape, x.dtype), dy, x),)

    op.defvjp(op_forward, op_backward)

    def function(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        _check_arrays({"x": (x, fam.x_ndim)})
        out_shape = shape_query(tuple(x.shape), kernel_size, stride=stride, padding=padding, dilation=dilation,
                                ceil_mode=ceil_mode)
        kwargs = dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
        return op(_hashable(tuple(kwargs.items())), out_shape, x)

    function.__doc__ = f"""{fam.summary[0].upper()}{fam.summary[1:]}, differentiable in JAX.

``{fam.name}(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False)``: the arguments of
:func:`lcnumba.{fam.name}_forward`; the gradient routes ``dy`` to each window's maximum
(:func:`lcnumba.{fam.name}_backward`).
"""
    return function


# ---------------------------------------------------------------- NetVLAD


def _vector_op(fam):
    """``op(arrays, per_sample, static, out_shape)``: ``fam``'s forward (one output row per sample) on the named
    arrays, differentiable in all of them but a ``mask``.

    ``arrays`` is ``((name, array), ...)``, the ``per_sample`` first ones with a batch axis of their own
    (folded into N under vmap); the callbacks pass every array by the name the public functions give it.
    """
    forward, backward = _PUBLIC[f"{fam.name}_forward"], _PUBLIC[f"{fam.name}_backward"]

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
    def op(names, per_sample, static, out_shape, *arrays):
        def run(*given):
            return forward(**dict(zip(names, given)), **dict(static))
        return _call(run, tuple(a.ndim for a in arrays), per_sample, jax.ShapeDtypeStruct(out_shape, arrays[0].dtype),
                     *arrays)

    def op_forward(names, per_sample, static, out_shape, *arrays):
        return op(names, per_sample, static, out_shape, *arrays), arrays

    def op_backward(names, per_sample, static, out_shape, arrays, dy):
        def run(dy, *given):
            return backward(dy, **dict(zip(names, given)), **dict(static))
        shapes = tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for name, a in zip(names, arrays) if name != "mask")
        grads = iter(_call(run, (2,) + tuple(a.ndim for a in arrays), None, shapes, dy, *arrays))
        return tuple(None if name == "mask" else next(grads) for name in names)  # a mask has no gradient

    op.defvjp(op_forward, op_backward)

    def call(arrays, per_sample, static, out_shape):
        names = tuple(name for name, _ in arrays)
        return op(names, per_sample, _hashable(static), out_shape, *(array for _, array in arrays))

    return call


def _flags(**flags):
    return tuple((name, checks.flag(value, name)) for name, value in flags.items())


def _netvlad(fam):
    op = _vector_op(fam)

    def function(x, w, b, centroids, normalize_input=True, eps=1e-12, *, intra_normalize=True, final_normalize=True,
                 mask=None):
        _check_arrays({"x": (x, (3, 4)), "w": (w, 2), "b": (b, 1), "centroids": (centroids, 2)})
        checks.netvlad_shapes(tuple(x.shape), tuple(w.shape), tuple(b.shape), tuple(centroids.shape))
        per_sample = (("x", x),)
        if mask is not None:
            checks.mask_dtype_and_shape("mask", mask.dtype, tuple(mask.shape), tuple(x.shape))
            per_sample += (("mask", mask),)
        static = _flags(normalize_input=normalize_input, intra_normalize=intra_normalize,
                        final_normalize=final_normalize) + (("eps", checks.positive_float(eps, "eps")),)
        return op(per_sample + (("w", w), ("b", b), ("centroids", centroids)), len(per_sample), static,
                  (x.shape[0], centroids.shape[0] * x.shape[1]))

    function.__doc__ = f"""{fam.summary}, differentiable in JAX.

``netvlad(x, w, b, centroids, normalize_input=True, eps=1e-12, *, intra_normalize=True,
final_normalize=True, mask=None)``: the arguments and layouts of :func:`lcnumba.netvlad_forward`;
the gradients of ``x``, ``w``, ``b`` and ``centroids`` come from :func:`lcnumba.netvlad_backward`
(``mask``, bool or integers of shape (N, M) or (N, H, W), has none).
"""
    return function


def _vlad_aggregate(fam):
    op = _vector_op(fam)

    def function(x, assignment, centroids, intra_normalize=True, final_normalize=True, eps=1e-12):
        _check_arrays({"x": (x, (3, 4)), "assignment": (assignment, (3, 4)), "centroids": (centroids, 2)})
        checks.centroids_per_descriptor(tuple(centroids.shape), tuple(x.shape))
        checks.assignment_shape(tuple(assignment.shape), tuple(x.shape), tuple(centroids.shape))
        static = _flags(intra_normalize=intra_normalize, final_normalize=final_normalize) + (
            ("eps", checks.positive_float(eps, "eps")),)
        return op((("x", x), ("assignment", assignment), ("centroids", centroids)), 2, static,
                  (x.shape[0], centroids.shape[0] * x.shape[1]))

    function.__doc__ = f"""{fam.summary[0].upper()}{fam.summary[1:]}, differentiable in JAX.

``vlad_aggregate(x, assignment, centroids, intra_normalize=True, final_normalize=True, eps=1e-12)``:
the arguments and layouts of :func:`lcnumba.vlad_aggregate_forward`; the gradients of all three arrays
come from :func:`lcnumba.vlad_aggregate_backward`.
"""
    return function


def _netvlad_pca(fam):
    op = _vector_op(fam)

    def function(v, projection, bias, eps=1e-12):
        _check_arrays({"v": (v, 2), "projection": (projection, 2), "bias": (bias, 1)})
        checks.pca_shapes(tuple(v.shape), tuple(projection.shape), tuple(bias.shape))
        return op((("v", v), ("projection", projection), ("bias", bias)), 1,
                  (("eps", checks.positive_float(eps, "eps")),), (v.shape[0], projection.shape[0]))

    function.__doc__ = f"""{fam.summary}, differentiable in JAX.

``netvlad_pca(v, projection, bias, eps=1e-12)``: the arguments and layouts of
:func:`lcnumba.netvlad_pca_forward` (``projection`` and ``bias`` from :func:`lcnumba.netvlad_pca_fit`
start the layer); the gradients of all three arrays come from :func:`lcnumba.netvlad_pca_backward`.
"""
    return function


FUNCTIONS = table.per_family({"conv": _conv, "conv_transpose": _conv_transpose, "pool": _pool, "netvlad": _netvlad,
                              "vlad_aggregate": _vlad_aggregate, "netvlad_pca": _netvlad_pca}, __name__)
globals().update(FUNCTIONS)
__all__ = sorted(FUNCTIONS)
