"""The public op functions, generated from the op table (``lcnumba.table``).

Each public function is real Python source made from its row: its own
signature (so ``inspect.signature``, ``help()``, IDEs and Sphinx show the
parameters), its numpydoc docstring (``lcnumba.ops.docs``) and a body of two
lines: choose the backend from where the arrays live (``_backend``), then run
the pass's core with every argument. The cores (``ops.conv``, ``ops.pool``,
``ops.netvlad``, ``ops.conv_transpose``) do the rest on either device.

``FUNCTIONS`` maps every public name to its function; ``lcnumba`` re-exports
them.
"""

import linecache

from .. import checks, table
from . import conv, conv_transpose, netvlad, netvlad_pca, pool, vlad_aggregate
from .backend import HOST
from .docs import docstring

_CORES = {"conv": conv, "conv_transpose": conv_transpose, "pool": pool, "netvlad": netvlad,
          "vlad_aggregate": vlad_aggregate, "netvlad_pca": netvlad_pca}

_CONV_GEOMETRY = 'stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"'
#: The transposed ops take no padding_mode: PyTorch's ConvTranspose pads with zeros only.
_TRANSPOSE_GEOMETRY = "stride=1, padding=0, output_padding=0, dilation=1, groups=1"
_VLAD_OPTIONS = "intra_normalize=True, final_normalize=True"


def _conv_signatures(kind, geometry):
    """The five passes of a convolution kind whose geometry parameters are ``geometry`` (source)."""
    return {
        (kind, "forward"): f"x, w, b=None, *, {geometry}, {{tile}}out=None, stream=0",
        (kind, "backward_input"): f"dy, w, input_shape, *, {geometry}, {{tile}}out=None, stream=0",
        (kind, "backward_weight"): f"dy, x, weight_shape, *, {geometry}, {{tile}}out=None, accumulate=False, "
                                   f"stream=0",
        (kind, "backward_bias"): "dy, bias_shape, *, {tile}out=None, accumulate=False, stream=0",
        (kind, "backward"): f"dy, x, w, b=None, *, {geometry}, {{tile}}stream=0",
    }


#: Parameters of each pass after the positional arrays, as source. ``{tile}`` becomes
#: ``tile_mode="periodic", `` for the tiled families.
_SIGNATURES = {
    **_conv_signatures("conv", _CONV_GEOMETRY),
    **_conv_signatures("conv_transpose", _TRANSPOSE_GEOMETRY),
    ("pool", "forward"): "x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False, "
                         "return_indices=False, out=None, indices_out=None, stream=0",
    ("pool", "backward"): "dy, indices, input_shape, *, kernel_size=None, stride=None, padding=None, dilation=None, "
                          "ceil_mode=None, out=None, stream=0",
    ("netvlad", "forward"): f"x, w, b, centroids, *, normalize_input=True, {_VLAD_OPTIONS}, mask=None, eps=1e-12, "
                            "out=None, stream=0",
    ("netvlad", "backward"): f"dy, x, w, b, centroids, *, normalize_input=True, {_VLAD_OPTIONS}, mask=None, "
                             "eps=1e-12, stream=0",
    # NetVLAD's parts for callers who assemble their own (lcnumba.table.NETVLAD_PART_FAMILIES)
    ("vlad_aggregate", "forward"): f"x, assignment, centroids, *, {_VLAD_OPTIONS}, eps=1e-12, out=None, stream=0",
    ("vlad_aggregate", "backward"): f"dy, x, assignment, centroids, *, {_VLAD_OPTIONS}, eps=1e-12, stream=0",
    ("netvlad_pca", "forward"): "v, projection, bias, *, eps=1e-12, out=None, stream=0",
    ("netvlad_pca", "backward"): "dy, v, projection, bias, *, eps=1e-12, stream=0",
}

#: Parameters that hold arrays: they decide the device of a call.
_ARRAYS = ("x", "w", "b", "dy", "centroids", "indices", "out", "indices_out", "mask", "assignment", "v",
           "projection", "bias")


def _backend(stream, named_arrays):
    """The host backend for NumPy arrays, the device backend (on ``stream``) for CUDA arrays; never a mix."""
    if checks.device_of(named_arrays) == "cpu":
        return HOST
    from ..gpu.backend import DeviceBackend  # only now: import lcnumba needs no numba-cuda

    return DeviceBackend(stream)


def _parameter_names(signature):
    names = []
    for item in signature.split(","):
        name = item.split("=")[0].strip()
        if name and name != "*":
            names.append(name)
    return names


def _source(name, fam, part):
    signature = _SIGNATURES[fam.kind, part].format(tile='tile_mode="periodic", ' if fam.has_tiles else "")
    names = _parameter_names(signature)
    arrays = ", ".join(f"{n!r}: {n}" for n in names if n in _ARRAYS)
    arguments = ", ".join(f"{n}={n}" for n in names if n != "stream")
    return f"def {name}({signature}):\n    return _core(_fam, _backend(stream, {{{arrays}}}), {arguments})\n"


def _make(name, fam, part):
    source = _source(name, fam, part)
    filename = f"<lcnumba.ops.public: {name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)  # tracebacks show the line
    namespace = {"_core": getattr(_CORES[fam.kind], part), "_fam": fam, "_backend": _backend}
    exec(compile(source, filename, "exec"), namespace)
    function = namespace[name]
    function.__doc__ = docstring(fam, part)
    function.__module__ = "lcnumba"
    function.__qualname__ = name
    return function


FUNCTIONS = {name: _make(name, fam, part) for name, fam, part in table.functions()}
