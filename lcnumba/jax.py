"""lcnumba in JAX: every op family as a differentiable function (extra ``jax``).

``lcnumba.jax.local_conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1)`` and its
siblings, one per family of the op table (``conv2d``, ``tiled_conv2d``, ``local_conv2d``, the 1-D
forms, ``max_pool2d``, ``max_pool1d``, ``netvlad``), take the arguments of lcnumba's NumPy
forward functions and are ``jax.custom_vjp`` functions:

- the forward and the backward call lcnumba's public functions (the forward pass and the
  hand-derived backward pass) on the host through ``jax.pure_callback``, so they run under
  ``jax.jit`` and ``jax.grad`` on any JAX backend (device arrays are copied to the host);
- output shapes come from ``lcnumba.geometry`` when the function is traced, and so do the
  errors: a wrong shape, rank or dtype raises the NumPy function's message at trace time;
- under ``jax.vmap`` the callbacks see the mapped axes in front (``vmap_method="expand_dims"``):
  when only the per-sample arrays (``x``, ``dy``) are mapped, the mapped axes are folded into the
  batch N and lcnumba is called once; otherwise (mapped weights, and the weight gradients of a
  mapped backward, which are per mapped element) it is called once per mapped element.

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


def _conv(fam):
    op = _conv_functions(fam)

    def call(x, w, b, kwargs):
        _check_arrays({"x": (x, fam.x_ndim), "w": (w, fam.weight_ndim), "b": (b, fam.bias_ndim)})
        plan = geometry.conv_plan(fam, tuple(x.shape), tuple(w.shape), kwargs["stride"], kwargs["padding"],
                                  kwargs["dilation"], kwargs["groups"], kwargs.get("tile_mode", "periodic"),
                                  x_name="x", w_name="w")
        if b is not None:
            checks.shape_equal(b, "b", plan.bias_shape, "one bias per filter"
                               + ("" if fam.sharing == "shared" else " and tile"))
        return op(_hashable(tuple(kwargs.items())), plan.output_shape, x, w, b)

    if fam.has_tiles:
        def function(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, tile_mode="periodic"):
            return call(x, w, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                                      tile_mode=tile_mode))
    else:
        def function(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
            return call(x, w, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups))

    tile = ', tile_mode="periodic"' if fam.has_tiles else ""
    function.__doc__ = f"""{fam.summary[0].upper()}{fam.summary[1:]}, differentiable in JAX.

``{fam.name}(x, w, b=None, stride=1, padding=0, dilation=1, groups=1{tile})``: the arguments and layouts
of :func:`lcnumba.{fam.name}_forward` (``w`` of shape {fam.layout(fam.weight_dims)}, ``b`` of shape
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


def _netvlad(fam):
    forward, backward = _PUBLIC["netvlad_forward"], _PUBLIC["netvlad_backward"]

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
    def op(static, out_shape, x, w, b, centroids):
        kwargs = dict(static)
        return _call(lambda *arrays: forward(*arrays, **kwargs), (x.ndim, 2, 1, 2), 1,
                     jax.ShapeDtypeStruct(out_shape, x.dtype), x, w, b, centroids)

    def op_forward(static, out_shape, x, w, b, centroids):
        return op(static, out_shape, x, w, b, centroids), (x, w, b, centroids)

    def op_backward(static, out_shape, residuals, dy):
        kwargs = dict(static)
        shapes = tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in residuals)
        return tuple(_call(lambda *arrays: backward(*arrays, **kwargs), (2, residuals[0].ndim, 2, 1, 2), None,
                           shapes, dy, *residuals))

    op.defvjp(op_forward, op_backward)

    def function(x, w, b, centroids, normalize_input=True, eps=1e-12):
        _check_arrays({"x": (x, (3, 4)), "w": (w, 2), "b": (b, 1), "centroids": (centroids, 2)})
        checks.netvlad_shapes(tuple(x.shape), tuple(w.shape), tuple(b.shape), tuple(centroids.shape))
        static = (("normalize_input", checks.flag(normalize_input, "normalize_input")),
                  ("eps", checks.positive_float(eps, "eps")))
        return op(static, (x.shape[0], centroids.shape[0] * x.shape[1]), x, w, b, centroids)

    function.__doc__ = f"""{fam.summary}, differentiable in JAX.

``netvlad(x, w, b, centroids, normalize_input=True, eps=1e-12)``: the arguments and layouts of
:func:`lcnumba.netvlad_forward`; the gradients of all four arrays come from :func:`lcnumba.netvlad_backward`.
"""
    return function


FUNCTIONS = table.per_family({"conv": _conv, "pool": _pool, "netvlad": _netvlad}, __name__)
globals().update(FUNCTIONS)
__all__ = sorted(FUNCTIONS)
