"""PyTorch custom operators for every op family, generated from the op table.

Each row of ``lcnumba.table`` becomes operators in the ``lcnumba`` namespace
(``torch.ops.lcnumba.<name>``), registered with ``torch.library.custom_op``:

==========================================  ==========================================================
operator                                    schema
==========================================  ==========================================================
``<conv family>_forward``                   ``(x, w, b?, stride, padding, dilation, groups[, tile_mode]) -> y``
``<conv family>_backward_input``            ``(dy, w, input_shape, stride, ...) -> dx``
``<conv family>_backward_weight``           ``(dy, x, weight_shape, stride, ...) -> dw``
``<conv family>_backward_bias``             ``(dy, bias_shape[, tile_mode]) -> db``
``<transposed family>_<pass>``              as the conv family's, ``output_padding`` after ``groups``
``max_pool2d_forward``, ``max_pool1d_...``  ``(x, kernel_size, stride, padding, dilation, ceil_mode) -> (y, indices)``
``max_pool2d_backward``, ``max_pool1d_...`` ``(dy, indices, input_shape) -> dx``
``netvlad_forward``                         ``(x, w, b, centroids, mask?, <options>) -> y``
``netvlad_backward``                        ``(dy, x, w, b, centroids, mask?, <options>) -> (dx, dw, db, dc)``
``vlad_aggregate_forward``                  ``(x, assignment, centroids, intra_normalize, final_normalize, eps) -> y``
``vlad_aggregate_backward``                 ``(dy, x, assignment, centroids, ...) -> (dx, dassignment, dc)``
``netvlad_pca_forward``                     ``(v, projection, bias, eps) -> y``
``netvlad_pca_backward``                    ``(dy, v, projection, bias, eps) -> (dv, dprojection, dbias)``
==========================================  ==========================================================

NetVLAD's ``<options>`` are ``normalize_input, intra_normalize, final_normalize, eps``; its ``mask`` (bool
or integer, (N, M) or (N, H, W)) has no gradient. The transposed families (``conv2d_transpose``, ...) take
the geometry of the forward family whose kernels they run, then ``output_padding`` (one int per axis).

The geometry arguments are already normalised (``lcnumba.torch.functional``
does that from the spellings users write): ``stride`` and ``dilation`` one
int per spatial axis, ``padding`` the cells before each axis, then after
(``(top, left, bottom, right)``, or ``(left, right)`` in 1-D),
``kernel_size`` and ``output_padding`` one int per axis.

Every operator runs the public lcnumba function of its pass (the same one a
NumPy user calls, with its checks and messages) on views of the tensors:

- a CPU tensor is handed over as ``tensor.numpy()``, which shares its memory
  (a non-contiguous one is made contiguous once, by the core); lcnumba
  allocates the outputs and ``torch.from_numpy`` makes them the returned
  tensors, so the kernel writes into the memory of the tensor that is
  returned;
- a CUDA tensor is handed over as itself (``__cuda_array_interface__``); the
  outputs are allocated by PyTorch and passed as ``out=``, and the kernels are
  launched on ``torch.cuda.current_stream()``;
- a tensor of another dtype or device reaches the core, which refuses it with
  its own message, as it refuses a mix of devices or dtypes.

The forward operators have autograd formulas (``register_autograd``) made of
the backward operators, which call lcnumba's hand-derived backward passes;
only the gradients that autograd asks for are computed. In eager mode a call
on plain tensors takes a direct path (``Family.forward``): the same
implementations and formula without the dispatcher's Python layers, and the
combined backward when every gradient is wanted. The backward
operators are differentiable once only: differentiating them again raises.
Every operator has a fake implementation (``register_fake``) whose output
shapes come from ``lcnumba.geometry``, so ``torch.compile`` traces models
that use them without graph breaks. The batch size stays symbolic there;
every other size is specialised.
"""

import functools
from typing import NamedTuple

import torch

from .. import checks, geometry, table
from ..ops.public import FUNCTIONS

NAMESPACE = "lcnumba"

_GEOMETRY = "SymInt[] stride, SymInt[] padding, SymInt[] dilation, SymInt groups"


def _conv_schemas(kind, geometry):
    """The operator schemas of a convolution kind whose geometry arguments are ``geometry``."""
    return {
        (kind, "forward"): f"(Tensor x, Tensor w, Tensor? b, {geometry}{{tile}}) -> Tensor",
        (kind, "backward_input"): f"(Tensor dy, Tensor w, SymInt[] input_shape, {geometry}{{tile}}) -> Tensor",
        (kind, "backward_weight"): f"(Tensor dy, Tensor x, SymInt[] weight_shape, {geometry}{{tile}}) -> Tensor",
        (kind, "backward_bias"): "(Tensor dy, SymInt[] bias_shape{tile}) -> Tensor",
    }


_VLAD_OPTIONS = "bool intra_normalize, bool final_normalize, float eps"

#: Schema of each (kind, pass); ``{tile}`` becomes ``, str tile_mode`` for the tiled families.
SCHEMAS = {
    # The convolutions' geometry ends with the padding mode (PyTorch's ConvTranspose pads with zeros only).
    **_conv_schemas("conv", f"{_GEOMETRY}, str padding_mode"),
    # A transposed family's geometry is its forward family's, then output_padding: the conv kind's geometry
    # helpers serve both, and output_padding travels with tile_mode in the tail of the arguments.
    **_conv_schemas("conv_transpose", f"{_GEOMETRY}, SymInt[] output_padding"),
    ("pool", "forward"): "(Tensor x, SymInt[] kernel_size, SymInt[] stride, SymInt[] padding, SymInt[] dilation, "
                         "bool ceil_mode) -> (Tensor, Tensor)",
    ("pool", "backward"): "(Tensor dy, Tensor indices, SymInt[] input_shape) -> Tensor",
    ("netvlad", "forward"): "(Tensor x, Tensor w, Tensor b, Tensor centroids, Tensor? mask, bool normalize_input, "
                            f"{_VLAD_OPTIONS}) -> Tensor",
    ("netvlad", "backward"): "(Tensor dy, Tensor x, Tensor w, Tensor b, Tensor centroids, Tensor? mask, "
                             f"bool normalize_input, {_VLAD_OPTIONS}) -> (Tensor, Tensor, Tensor, Tensor)",
    ("vlad_aggregate", "forward"): f"(Tensor x, Tensor assignment, Tensor centroids, {_VLAD_OPTIONS}) -> Tensor",
    ("vlad_aggregate", "backward"): f"(Tensor dy, Tensor x, Tensor assignment, Tensor centroids, {_VLAD_OPTIONS}) "
                                    "-> (Tensor, Tensor, Tensor)",
    ("netvlad_pca", "forward"): "(Tensor v, Tensor projection, Tensor bias, float eps) -> Tensor",
    ("netvlad_pca", "backward"): "(Tensor dy, Tensor v, Tensor projection, Tensor bias, float eps) "
                                 "-> (Tensor, Tensor, Tensor)",
}


# ---------------------------------------------------------------- tensors as lcnumba arrays


def _array(tensor):
    """What the core is given for ``tensor``: a NumPy view (CPU), the tensor itself (CUDA, other devices)."""
    if tensor is None:
        return None
    if tensor.requires_grad:
        tensor = tensor.detach()  # the core reads and writes memory; autograd is this module's business
    if tensor.is_cuda:
        return tensor
    try:
        return tensor.numpy()
    except (TypeError, RuntimeError):  # another device, or a dtype NumPy lacks: the core names it
        return tensor


_STREAMS = {}


def _stream(tensor):
    """PyTorch's current stream on ``tensor``'s CUDA device, as the ``stream=`` of an lcnumba call."""
    handle = torch.cuda.current_stream(tensor.device).cuda_stream
    if handle == 0:
        return 0
    if handle not in _STREAMS:
        from numba import cuda

        _STREAMS[handle] = cuda.external_stream(handle)
    return _STREAMS[handle]


def _run(like, outputs, call):
    """The output tensors of ``call(outs, stream)``, a public lcnumba function called with ``out=outs``.

    ``outputs()`` lists ``(shape, dtype)`` (None: ``like``'s dtype). On the CPU lcnumba allocates the
    outputs (``outs`` are None; ``outputs`` is not needed) and they become tensors sharing its memory: a
    NumPy array made by lcnumba costs less there than a view of a tensor passed as ``out=``. On CUDA
    PyTorch allocates them (its caching allocator) and the kernels write into them on PyTorch's current
    stream, on ``like``'s device.
    """
    if not like.is_cuda:
        results = call((None, None), 0)
        if isinstance(results, tuple):
            return tuple(torch.from_numpy(array) for array in results)
        return torch.from_numpy(results)
    tensors = tuple(like.new_empty(shape, dtype=dtype) for shape, dtype in outputs())
    _on_cuda(like, lambda stream: call(tuple(t.detach() for t in tensors), stream))
    return tensors[0] if len(tensors) == 1 else tensors


def _on_cuda(like, call):
    """``call(stream)`` with Numba's current device that of the CUDA tensor ``like``, on PyTorch's current stream."""
    from numba import cuda

    with cuda.gpus[like.device.index if like.device.index is not None else torch.cuda.current_device()]:
        return call(_stream(like))


def _as_tensor(array, like):
    """An array lcnumba allocated, as a tensor sharing its memory."""
    if like.is_cuda:
        return torch.as_tensor(array, device=like.device)
    return torch.from_numpy(array)


def _sizes(shape):
    """Static sizes: a size that is symbolic under ``torch.compile`` is specialised here."""
    return tuple(map(int, shape))


# ---------------------------------------------------------------- normalised geometry -> the core's spelling


@functools.lru_cache(maxsize=1024)
def _conv_arguments(fam, stride, padding, dilation, groups, *tail):
    """Keyword arguments of the public functions of ``fam`` for a normalised geometry (tuples).

    ``tail`` is what the schema has after ``groups``: ``padding_mode`` (``output_padding`` for a
    transposed family), then ``tile_mode`` for a tiled one.
    """
    two = fam.spatial == 2
    if two:
        kwargs = dict(stride=stride, padding=((padding[0], padding[2]), (padding[1], padding[3])),
                      dilation=dilation, groups=groups)
    else:
        kwargs = dict(stride=stride[0], padding=(padding[0], padding[1]), dilation=dilation[0], groups=groups)
    if fam.kind == "conv_transpose":
        output_padding, *tail = tail
        kwargs["output_padding"] = output_padding if two else output_padding[0]
    else:
        kwargs["padding_mode"], *tail = tail
    if fam.has_tiles:
        kwargs["tile_mode"] = tail[0]
    return kwargs


def _conv_kwargs(fam, stride, padding, dilation, groups, tail):
    try:  # the modules pass tuples
        return _conv_arguments(fam, stride, padding, dilation, groups, *tail)
    except TypeError:  # lists, as the dispatcher passes them
        return _conv_arguments(fam, tuple(stride), tuple(padding), tuple(dilation), groups,
                               *(tuple(item) if isinstance(item, list) else item for item in tail))


@functools.lru_cache(maxsize=1024)
def _conv_output(fam, x_rest, w_shape, kwargs_key):
    """Output shape less the batch of ``fam``'s forward on ``(1,) + x_rest``, with the forward's shape checks."""
    kwargs = dict(kwargs_key)
    if fam.kind == "conv_transpose":
        plan = geometry.conv_transpose_plan(fam, (1,) + x_rest, w_shape, kwargs["stride"], kwargs["padding"],
                                            kwargs["output_padding"], kwargs["dilation"], kwargs["groups"],
                                            kwargs.get("tile_mode", "periodic"), x_name="x", w_name="w")
    else:
        plan = geometry.conv_plan(fam, (1,) + x_rest, w_shape, kwargs["stride"], kwargs["padding"],
                                  kwargs["dilation"], kwargs["groups"], kwargs.get("tile_mode", "periodic"),
                                  x_name="x", w_name="w", padding_mode=kwargs["padding_mode"])
    return plan.output_shape[1:]


def _conv_shape(fam, x_shape, w_shape, kwargs):
    """Output shape of ``fam``'s forward; a symbolic batch size (``torch.compile``) stays symbolic."""
    return (x_shape[0],) + _conv_output(fam, _sizes(x_shape[1:]), _sizes(w_shape), tuple(kwargs.items()))


@functools.lru_cache(maxsize=1024)
def _pool_output(fam, plane, kernel_size, stride, padding, dilation, ceil_mode):
    shape_query = getattr(geometry, f"{fam.name}_output_shape")
    return shape_query((1, 1) + plane, kernel_size, stride=stride, padding=padding, dilation=dilation,
                       ceil_mode=ceil_mode)[2:]


def _pool_output_shape(fam, x, kernel_size, stride, padding, dilation, ceil_mode):
    return tuple(x.shape[:2]) + _pool_output(fam, _sizes(x.shape[2:]), tuple(kernel_size), tuple(stride),
                                             tuple(padding), tuple(dilation), ceil_mode)


def _netvlad_output_shape(x, w, b, centroids, mask):
    checks.netvlad_shapes(_sizes(x.shape), _sizes(w.shape), _sizes(b.shape), _sizes(centroids.shape))
    return (x.shape[0], centroids.shape[0] * x.shape[1])


def _aggregate_output_shape(x, assignment, centroids):
    x_shape, centroids_shape = _sizes(x.shape), _sizes(centroids.shape)
    checks.centroids_per_descriptor(centroids_shape, x_shape)
    checks.assignment_shape(_sizes(assignment.shape), x_shape, centroids_shape)
    return (x.shape[0], centroids.shape[0] * x.shape[1])


def _pca_output_shape(v, projection, bias):
    checks.pca_shapes(_sizes(v.shape), _sizes(projection.shape), _sizes(bias.shape))
    return (v.shape[0], projection.shape[0])


# ---------------------------------------------------------------- implementations and fakes, per (kind, pass)
#
# ``impl(fam, fn, *schema arguments)`` runs the public function ``fn`` of one pass; ``fake(fam, *schema
# arguments)`` returns empty outputs of the shapes ``impl`` would return. ``tile`` is ``(tile_mode,)`` for the
# tiled families and ``()`` for the others, as in the schemas; ``tail`` is the arguments after ``groups``
# (``output_padding`` of a transposed family, then ``tile``). Outputs are allocated by PyTorch (its caching
# allocator on CUDA) and passed as ``out=``.


def _conv_forward(fam, fn, x, w, b, stride, padding, dilation, groups, *tail):
    kwargs = _conv_kwargs(fam, stride, padding, dilation, groups, tail)
    return _run(x, lambda: [(_conv_shape(fam, x.shape, w.shape, kwargs), None)], lambda outs, stream: fn(
        _array(x), _array(w), _array(b), **kwargs, out=outs[0], stream=stream))


def _conv_forward_fake(fam, x, w, b, stride, padding, dilation, groups, *tail):
    return x.new_empty(_conv_shape(fam, x.shape, w.shape, _conv_kwargs(fam, stride, padding, dilation, groups, tail)))


def _conv_backward_input(fam, fn, dy, w, input_shape, stride, padding, dilation, groups, *tail):
    kwargs = _conv_kwargs(fam, stride, padding, dilation, groups, tail)
    return _run(dy, lambda: [(input_shape, None)], lambda outs, stream: fn(
        _array(dy), _array(w), tuple(input_shape), **kwargs, out=outs[0], stream=stream))


def _conv_backward_weight(fam, fn, dy, x, weight_shape, stride, padding, dilation, groups, *tail):
    kwargs = _conv_kwargs(fam, stride, padding, dilation, groups, tail)
    return _run(dy, lambda: [(weight_shape, None)], lambda outs, stream: fn(
        _array(dy), _array(x), tuple(weight_shape), **kwargs, out=outs[0], stream=stream))


def _conv_backward_bias(fam, fn, dy, bias_shape, *tile):
    kwargs = {"tile_mode": tile[0]} if tile else {}
    return _run(dy, lambda: [(bias_shape, None)], lambda outs, stream: fn(
        _array(dy), tuple(bias_shape), **kwargs, out=outs[0], stream=stream))


def _conv_backward_all(fam, fn, dy, x, w, b, stride, padding, dilation, groups, *tail):
    """All gradients in one call of the combined backward (CPU, direct path: one set of checks, not three)."""
    kwargs = _conv_kwargs(fam, stride, padding, dilation, groups, tail)
    grads = fn(_array(dy), _array(x), _array(w), _array(b), **kwargs)
    return tuple(None if g is None else torch.from_numpy(g) for g in grads)


def _gradient_fake(fam, dy, other, shape, *rest):
    """Fake of a backward pass whose output shape is an argument (``input_shape``, ``weight_shape``)."""
    return dy.new_empty(shape)


def _bias_gradient_fake(fam, dy, bias_shape, *tile):
    return dy.new_empty(bias_shape)


def _pool_forward(fam, fn, x, kernel_size, stride, padding, dilation, ceil_mode):
    def outputs():
        shape = _pool_output_shape(fam, x, kernel_size, stride, padding, dilation, ceil_mode)
        return [(shape, None), (shape, torch.int64)]

    return _run(x, outputs, lambda outs, stream: fn(
        _array(x), tuple(kernel_size), stride=tuple(stride), padding=tuple(padding), dilation=tuple(dilation),
        ceil_mode=ceil_mode, return_indices=True, out=outs[0], indices_out=outs[1], stream=stream))


def _pool_forward_fake(fam, x, kernel_size, stride, padding, dilation, ceil_mode):
    shape = _pool_output_shape(fam, x, kernel_size, stride, padding, dilation, ceil_mode)
    return x.new_empty(shape), x.new_empty(shape, dtype=torch.int64)


def pool_values(fam, x, kernel_size, stride, padding, dilation, ceil_mode):
    """The pooling ``y`` alone, or None where the operator must run.

    A forward that nothing will differentiate (eager, plain tensor, no gradient wanted) and whose caller
    did not ask for the indices needs no indices: the kernel then skips writing an int64 per output
    (on DeepFace M2 the forward took 1.57x the NumPy API's time with them). Everywhere else (autograd,
    ``torch.compile``, transforms, fake tensors) the operator runs and returns both.
    """
    if not isinstance(x, torch.Tensor) or not direct((x,)) or (torch.is_grad_enabled() and x.requires_grad):
        return None
    fn = FUNCTIONS[f"{fam.name}_forward"]
    return _run(x, lambda: [(_pool_output_shape(fam, x, kernel_size, stride, padding, dilation, ceil_mode), None)],
                lambda outs, stream: fn(_array(x), tuple(kernel_size), stride=tuple(stride), padding=tuple(padding),
                                        dilation=tuple(dilation), ceil_mode=ceil_mode, out=outs[0], stream=stream))


def _pool_backward(fam, fn, dy, indices, input_shape):
    return _run(dy, lambda: [(input_shape, None)], lambda outs, stream: fn(
        _array(dy), _array(indices), tuple(input_shape), out=outs[0], stream=stream))


class _Vector(NamedTuple):
    """The arguments of a NetVLAD kind (one output row per sample), as its schemas list them."""

    tensors: tuple  # the forward's tensor arguments, by the public functions' names
    options: tuple  # the arguments after them
    output_shape: object  # ``output_shape(*tensors)``, with the core's shape checks
    differentiable: int  # the first ones of ``tensors`` have gradients (NetVLAD's mask has none)


_VECTORS = {
    "netvlad": _Vector(("x", "w", "b", "centroids", "mask"),
                       ("normalize_input", "intra_normalize", "final_normalize", "eps"), _netvlad_output_shape, 4),
    "vlad_aggregate": _Vector(("x", "assignment", "centroids"), ("intra_normalize", "final_normalize", "eps"),
                              _aggregate_output_shape, 3),
    "netvlad_pca": _Vector(("v", "projection", "bias"), ("eps",), _pca_output_shape, 3),
}


def _vector_kwargs(spec, args):
    """The public function's keyword arguments for the schema's ``args`` (tensors as arrays, then options)."""
    count = len(spec.tensors)
    return dict(zip(spec.tensors, map(_array, args[:count])), **dict(zip(spec.options, args[count:])))


def _vector_forward(fam, fn, *args):
    spec = _VECTORS[fam.kind]
    kwargs = _vector_kwargs(spec, args)
    return _run(args[0], lambda: [(spec.output_shape(*args[:len(spec.tensors)]), None)], lambda outs, stream: fn(
        **kwargs, out=outs[0], stream=stream))


def _vector_forward_fake(fam, *args):
    spec = _VECTORS[fam.kind]
    return args[0].new_empty(spec.output_shape(*args[:len(spec.tensors)]))


def _vector_backward(fam, fn, dy, *args):
    # These backwards have no out=: their gradients, allocated by lcnumba on either device, become tensors
    # sharing their memory.
    kwargs, like = _vector_kwargs(_VECTORS[fam.kind], args), args[0]

    def call(stream):
        return fn(_array(dy), **kwargs, stream=stream)

    grads = _on_cuda(like, call) if like.is_cuda else call(0)
    return tuple(_as_tensor(g, like) for g in grads)


def _vector_backward_fake(fam, dy, *args):
    return tuple(t.new_empty(t.shape) for t in args[:_VECTORS[fam.kind].differentiable])


_IMPLS = {
    ("conv", "forward"): (_conv_forward, _conv_forward_fake),
    ("conv", "backward_input"): (_conv_backward_input, _gradient_fake),
    ("conv", "backward_weight"): (_conv_backward_weight, _gradient_fake),
    ("conv", "backward_bias"): (_conv_backward_bias, _bias_gradient_fake),
    ("conv", "backward"): (_conv_backward_all, None),
    ("pool", "forward"): (_pool_forward, _pool_forward_fake),
    ("pool", "backward"): (_pool_backward, _gradient_fake),
    **{(kind, "forward"): (_vector_forward, _vector_forward_fake) for kind in _VECTORS},
    **{(kind, "backward"): (_vector_backward, _vector_backward_fake) for kind in _VECTORS},
}
# A transposed family's passes take the conv kind's arguments with output_padding in their tail.
_IMPLS.update({("conv_transpose", part): _IMPLS["conv", part] for part in table.CONV_PASSES})


# ---------------------------------------------------------------- autograd of the forward operators
#
# ``backward(passes, ctx, *grads)`` computes the gradients of one kind's forward with ``passes[part](...)``,
# the backward passes: the operators when autograd records or traces (torch.compile, create_graph=True),
# their implementations called directly otherwise (``Family.backward_passes``).


def _conv_setup(ctx, inputs, output):
    x, w, b = inputs[:3]
    ctx.save_for_backward(x, w, b)
    ctx.geometry = inputs[3:]
    ctx.bias_shape = None if b is None else list(b.shape)


def _conv_backward(passes, ctx, dy):
    """``tile_mode`` is in the geometry after ``padding_mode`` (``output_padding`` for a transposed family)."""
    x, w, b = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    tile = ctx.geometry[5:]
    if "backward" in passes and need_x and need_w and (need_b or b is None) and not dy.is_cuda:
        return passes["backward"](dy, x, w, b, *ctx.geometry) + (None,) * len(ctx.geometry)
    dx = passes["backward_input"](dy, w, list(x.shape), *ctx.geometry) if need_x else None
    dw = passes["backward_weight"](dy, x, list(w.shape), *ctx.geometry) if need_w else None
    db = passes["backward_bias"](dy, ctx.bias_shape, *tile) if need_b and ctx.bias_shape is not None else None
    return (dx, dw, db) + (None,) * len(ctx.geometry)


def _pool_setup(ctx, inputs, output):
    _, indices = output
    ctx.mark_non_differentiable(indices)
    ctx.save_for_backward(indices)
    ctx.input_shape = list(inputs[0].shape)


def _pool_backward_of(passes, ctx, dy, _indices_gradient):
    (indices,) = ctx.saved_tensors
    return (passes["backward"](dy, indices, ctx.input_shape),) + (None,) * 5


def _vector_setup(count):
    def setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:count])
        ctx.options = inputs[count:]

    return setup


def _vector_backward_of(passes, ctx, dy):
    grads = passes["backward"](dy, *ctx.saved_tensors, *ctx.options)
    needed = tuple(g if need else None for g, need in zip(grads, ctx.needs_input_grad))
    return needed + (None,) * (len(ctx.needs_input_grad) - len(needed))  # the mask's and the options'


#: kind: (setup_context, backward formula, number of tensor arguments of the forward)
_AUTOGRAD = {"conv": (_conv_setup, _conv_backward, 3),
             "conv_transpose": (_conv_setup, _conv_backward, 3),
             "pool": (_pool_setup, _pool_backward_of, 1),
             **{kind: (_vector_setup(len(spec.tensors)), _vector_backward_of, len(spec.tensors))
                for kind, spec in _VECTORS.items()}}


def _no_setup(ctx, inputs, output):
    pass


def _second_derivative(name):
    def backward(ctx, *grads):
        raise RuntimeError(
            f"{NAMESPACE}::{name}: double backward is not supported. lcnumba's backward passes are "
            "hand-derived first derivatives with no derivatives of their own, so a gradient computed "
            "through lcnumba cannot be differentiated again (create_graph=True, gradgradcheck, Hessians)."
        )

    return backward


# ---------------------------------------------------------------- the direct path


_PLAIN = (torch.Tensor, torch.nn.Parameter, type(None))
_DISPATCH_DEPTH = getattr(torch._C, "_len_torch_dispatch_stack", lambda: 0)


def direct(tensors):
    """Whether a forward call on ``tensors`` may skip the dispatcher and run its implementation directly.

    Only for plain tensors in eager mode: while ``torch.compile``, ``torch.export``, ``torch.jit.trace``,
    a ``torch.func`` transform or a dispatch mode (fake tensors, FlopCounterMode) watches, and for tensor
    subclasses, calls go through the operator, which they all understand. Both paths run the same
    implementation and the same backward formula; the direct one costs a few microseconds instead of
    the dispatcher's tens (``benchmarks/compare.py --overhead``).
    """
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch._C._are_functorch_transforms_active():
        return False
    if _DISPATCH_DEPTH():
        return False
    for tensor in tensors:
        if type(tensor) not in _PLAIN:
            return False
    return True


# ---------------------------------------------------------------- registration


class Family:
    """The operators of one family of the op table, and how a forward call reaches them.

    Attributes
    ----------
    ops : dict
        ``{pass: CustomOpDef}`` (registered as ``torch.ops.lcnumba.<family>_<pass>``).
    overloads : dict
        ``{pass: OpOverload}``: what the backward formula calls while autograd records or traces.
    backward_passes : dict
        ``{pass: function}``: the same implementations without the dispatcher.
    function : torch.autograd.Function
        The forward and its backward formula for the direct path.
    """

    def __init__(self, fam):
        self.fam = fam
        self.implementations = {part: self._implementation(part) for part in fam.passes}
        self.ops = {part: self._register(part) for part in self.operator_passes(fam)}
        self.overloads = {part: getattr(getattr(torch.ops, NAMESPACE), f"{fam.name}_{part}").default
                          for part in self.ops}
        # The direct path also has the convolutions' combined backward: one call when every gradient is wanted.
        self.backward_passes = {part: run for part, run in self.implementations.items() if part != "forward"}
        setup, backward, self.tensor_arguments = _AUTOGRAD[fam.kind]
        self.ops["forward"].register_autograd(functools.partial(backward, self.overloads), setup_context=setup)

        def direct_backward(ctx, *grads):
            # With create_graph=True autograd records the backward: the operators then make the
            # gradient's own gradient raise the double-backward error.
            passes = self.overloads if torch.is_grad_enabled() else self.backward_passes
            return backward(passes, ctx, *grads)

        self.run_forward = run_forward = self.implementations["forward"]

        def direct_forward(ctx, *args):
            # forward(ctx, ...) rather than a separate setup_context: Function.apply binds the
            # arguments of the latter with inspect.signature, tens of microseconds per call.
            output = run_forward(*args)
            setup(ctx, args, output)
            return output

        self.function = type(f"{fam.name}_function", (torch.autograd.Function,), {
            "forward": staticmethod(direct_forward),
            "backward": staticmethod(direct_backward),
        })

    @staticmethod
    def operator_passes(fam):
        """The passes that become operators: the conv family's combined ``backward`` is left out (its bias
        gradient may be None, which an operator cannot return); the autograd formula asks for each
        gradient on its own there (a first layer needs no input gradient)."""
        return tuple(part for part in fam.passes if part != "backward" or fam.kind not in ("conv", "conv_transpose"))

    def _implementation(self, part):
        name = f"{self.fam.name}_{part}"
        impl, _ = _IMPLS[self.fam.kind, part]
        function = FUNCTIONS[name]
        fam = self.fam

        def run(*args):
            return impl(fam, function, *args)

        run.__name__ = run.__qualname__ = name
        run.__doc__ = f"``torch.ops.{NAMESPACE}.{name}``: :func:`lcnumba.{name}` on tensors."
        return run

    def _register(self, part):
        fam = self.fam
        name = f"{fam.name}_{part}"
        _, fake = _IMPLS[fam.kind, part]
        schema = SCHEMAS[fam.kind, part].format(tile=", str tile_mode" if fam.has_tiles else "")
        op = torch.library.custom_op(f"{NAMESPACE}::{name}", self.implementations[part], mutates_args=(),
                                     schema=schema)
        op.register_fake(lambda *args: fake(fam, *args))
        if part != "forward":
            op.register_autograd(_second_derivative(name), setup_context=_no_setup)
        return op

    def forward(self, *args):
        """The family's forward on the operator's arguments: directly or through the dispatcher."""
        tensors = args[:self.tensor_arguments]
        if not direct(tensors):
            return self.overloads["forward"](*args)
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
            return self.function.apply(*args)
        return self.run_forward(*args)  # nothing to differentiate: no autograd node


#: ``{family name: Family}`` for every public family of the table.
FAMILIES = {fam.name: Family(fam) for fam in table.PUBLIC_FAMILIES}

#: ``{operator name: OpOverload}``, e.g. ``"local_conv2d_forward": torch.ops.lcnumba.local_conv2d_forward.default``.
OVERLOADS = {f"{name}_{part}": overload for name, family in FAMILIES.items()
             for part, overload in family.overloads.items()}
