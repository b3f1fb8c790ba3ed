"""Error paths of the convolution family (DESIGN section 3) and the geometry helpers.

Every bad argument must raise before any kernel runs, with the documented
exception class and a message that starts with the argument's name
(``"<name>: expected ..., got ..."``). The geometry tests pin the output-size
formula, the ``"same"`` split and the segments that every kernel walks.
"""

import itertools
import re
from dataclasses import dataclass

import numpy as np
import pytest

import lcnumba
from lcnumba import geometry, testing
from lcnumba.cpu import segments

from families import FAMILIES, LOCAL, TILED, Family, families

# ---------------------------------------------------------------- a valid call per family



# Keyword parameters of the public functions; everything else is positional.
KEYWORDS = ("stride", "padding", "dilation", "groups", "tile_mode", "out", "accumulate")


class Case:
    """A valid call of every function of ``fam``: N=2, C=4, groups=2, F=4, 3x2 kernel, 2x2 tiles."""

    def __init__(self, fam, *, dtype=np.float64, n=2, c=4, f=4, size=(5, 6), kernel=(3, 2), groups=2,
                 tiles=(2, 2), padding=0):
        self.fam = fam
        d = fam.spatial
        rng = np.random.default_rng(0)
        self.params = dict(stride=1, padding=padding, dilation=1, groups=groups)
        x_shape = (n, c) + size[-d:]
        bank = (f, c // groups) + kernel[-d:]
        out_spatial = tuple(s + (2 * padding) - k + 1 for s, k in zip(size[-d:], kernel[-d:]))
        grid = {"shared": (), "tiled": tiles[-d:], "local": out_spatial}[fam.sharing]
        self.x = rng.standard_normal(x_shape).astype(dtype)
        self.w = rng.standard_normal(grid + bank).astype(dtype)
        self.b = rng.standard_normal((f,) + grid).astype(dtype)
        self.dy = rng.standard_normal((n, f) + out_spatial).astype(dtype)

    def outputs(self):
        """Shapes of the results of each part."""
        return {"forward": self.dy.shape, "backward_input": self.x.shape,
                "backward_weight": self.w.shape, "backward_bias": self.b.shape}

    def call(self, part, **override):
        """Call ``part`` with the valid arguments, some replaced by ``override``."""
        a = dict(x=self.x, w=self.w, b=self.b, dy=self.dy, input_shape=self.x.shape, weight_shape=self.w.shape,
                 bias_shape=self.b.shape)
        kwargs = dict(self.params, **self.fam.mode)
        for key, value in override.items():
            (kwargs if key in KEYWORDS else a)[key] = value
        fn = self.fam.op(part)
        if part == "forward":
            return fn(a["x"], a["w"], a["b"], **kwargs)
        if part == "backward_input":
            return fn(a["dy"], a["w"], a["input_shape"], **kwargs)
        if part == "backward_weight":
            return fn(a["dy"], a["x"], a["weight_shape"], **kwargs)
        if part == "backward_bias":
            kwargs = {k: v for k, v in kwargs.items() if k in ("tile_mode", "out", "accumulate")}
            return fn(a["dy"], a["bias_shape"], **kwargs)
        if part == "backward":
            return fn(a["dy"], a["x"], a["w"], a["b"], **kwargs)
        raise AssertionError(part)


def named(name):
    """``pytest.raises(match=...)`` pattern: the message starts with the argument's name."""
    return rf"^{re.escape(name)}: "


def named_any(*names):
    return "^(" + "|".join(re.escape(n) for n in names) + "): "


@families
def test_valid_case_runs(fam):
    # The error tests below change one argument of this call; it must be valid as it stands.
    case = Case(fam)
    for part in ("forward", "backward_input", "backward_weight", "backward_bias", "backward"):
        case.call(part)


# ---------------------------------------------------------------- array arguments

ARRAY_ARGUMENTS = [
    ("forward", "x"), ("forward", "w"), ("forward", "b"),
    ("backward_input", "dy"), ("backward_input", "w"),
    ("backward_weight", "dy"), ("backward_weight", "x"),
    ("backward_bias", "dy"),
    ("backward", "dy"), ("backward", "x"), ("backward", "w"), ("backward", "b"),
]
array_arguments = pytest.mark.parametrize("part,arg", ARRAY_ARGUMENTS, ids=lambda v: v)


NON_ARRAYS = [(part, arg, kind) for part, arg in ARRAY_ARGUMENTS
              for kind in ("list", "None", "scalar", "numpy-scalar", "string")
              if not (arg == "b" and kind == "None")]  # b=None is the documented no-bias call


@families
@pytest.mark.parametrize("part,arg,kind", NON_ARRAYS, ids=lambda v: v)
def test_non_array_is_type_error(fam, part, arg, kind):
    case = Case(fam)
    bad = {"list": getattr(case, arg).tolist(), "None": None, "scalar": 1.5, "numpy-scalar": np.float64(1.5),
           "string": "x"}[kind]
    with pytest.raises(TypeError, match=named(arg)):
        case.call(part, **{arg: bad})


@families
@array_arguments
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.float16, np.complex128, np.bool_],
                         ids=lambda d: np.dtype(d).name)
def test_non_float_dtype_is_type_error(fam, part, arg, dtype):
    case = Case(fam)
    bad = getattr(case, arg).astype(dtype)
    with pytest.raises(TypeError, match=named(arg)):
        case.call(part, **{arg: bad})


# The first array of a call fixes the dtype; a later one that differs is named.
MIXED = [
    ("forward", "w"), ("forward", "b"),
    ("backward_input", "w"),
    ("backward_weight", "x"),
    ("backward", "x"), ("backward", "w"), ("backward", "b"),
]


@families
@pytest.mark.parametrize("part,arg", MIXED, ids=lambda v: v)
@pytest.mark.parametrize("first", [np.float32, np.float64], ids=["float32-first", "float64-first"])
def test_dtype_mix_is_type_error(fam, part, arg, first):
    case = Case(fam, dtype=first)
    other = np.float64 if first == np.float32 else np.float32
    with pytest.raises(TypeError, match=named(arg)):
        case.call(part, **{arg: getattr(case, arg).astype(other)})


@families
@array_arguments
@pytest.mark.parametrize("change", ["extra-axis", "missing-axis"])
def test_wrong_ndim_is_value_error(fam, part, arg, change):
    case = Case(fam)
    a = getattr(case, arg)
    bad = a[None] if change == "extra-axis" else np.asarray(a[0])  # 0-d for a 1-D bias: still an ndarray
    with pytest.raises(ValueError, match=named(arg)):
        case.call(part, **{arg: bad})


@families
def test_weight_channels_must_be_c_over_groups(fam):
    case = Case(fam)  # C = 4, groups = 2: the weight must see 2 channels
    channel_axis = -2 if fam.spatial == 1 else -3
    w = np.concatenate([case.w, case.w], axis=channel_axis)  # 4 channels per filter
    with pytest.raises(ValueError, match=named("w")):
        case.call("forward", w=w)
    with pytest.raises(ValueError, match=named("w")):
        case.call("backward_input", w=w)
    with pytest.raises(ValueError, match=named("weight_shape")):
        case.call("backward_weight", weight_shape=w.shape)
    with pytest.raises(ValueError, match=named_any("w", "input_shape")):
        case.call("backward_input", input_shape=(2, 8) + case.x.shape[2:])


@families
def test_bias_shape_must_match(fam):
    case = Case(fam)
    bad = np.concatenate([case.b, case.b[:1]], axis=0)  # F + 1 biases
    with pytest.raises(ValueError, match=named("b")):
        case.call("forward", b=bad)
    with pytest.raises(ValueError, match=named("bias_shape")):
        case.call("backward_bias", bias_shape=bad.shape)
    if fam.sharing != "shared":
        wrong_grid = case.b[..., :1]  # one tile/position too few along the last axis
        with pytest.raises(ValueError, match=named("b")):
            case.call("forward", b=wrong_grid)


@families
@pytest.mark.parametrize("part", ["backward_input", "backward_weight"])
def test_dy_shape_must_match_forward_output(fam, part):
    case = Case(fam)
    bad = np.concatenate([case.dy, case.dy[..., :1]], axis=-1)  # one output column too many
    with pytest.raises(ValueError, match=named("dy")):
        case.call(part, dy=bad)
    bad_f = np.concatenate([case.dy, case.dy[:, :2]], axis=1)  # F + 2 filters
    with pytest.raises(ValueError, match=named("dy")):
        case.call(part, dy=bad_f)


@families
def test_dy_of_batch_other_than_x_is_value_error(fam):
    case = Case(fam)
    with pytest.raises(ValueError, match=named("dy")):
        case.call("backward_weight", dy=case.dy[:1])
    with pytest.raises(ValueError, match=named_any("dy", "input_shape")):
        case.call("backward_input", input_shape=(3,) + case.x.shape[1:])


@pytest.mark.parametrize("fam", LOCAL, ids=str)
def test_local_weight_must_match_output_size(fam):
    case = Case(fam)
    bigger = np.concatenate([case.w, case.w[:1]], axis=0)  # OH + 1 banks (OL + 1 in 1-D)
    for part in ("forward", "backward_input", "backward"):
        with pytest.raises(ValueError, match=named("w")):
            case.call(part, w=bigger)
    with pytest.raises(ValueError, match=named("weight_shape")):
        case.call("backward_weight", weight_shape=bigger.shape)
    # the same weight is wrong once the geometry changes the output size
    with pytest.raises(ValueError, match=named("w")):
        case.call("forward", stride=2)
    with pytest.raises(ValueError, match=named("w")):
        case.call("forward", padding=1)
    with pytest.raises(ValueError, match=named("bias_shape")):
        case.call("backward_bias", bias_shape=case.b[..., :-1].shape)


@families
@pytest.mark.parametrize("part,name", [
    ("backward_input", "input_shape"), ("backward_weight", "weight_shape"), ("backward_bias", "bias_shape")])
def test_shape_arguments(fam, part, name):
    case = Case(fam)
    good = tuple(getattr(case, {"input_shape": "x", "weight_shape": "w", "bias_shape": "b"}[name]).shape)
    with pytest.raises(ValueError, match=named(name)):
        case.call(part, **{name: good + (1,)})
    with pytest.raises(ValueError, match=named(name)):
        case.call(part, **{name: good[:-1] + (-1,)})
    with pytest.raises(TypeError, match=named(name)):
        case.call(part, **{name: good[:-1] + (2.0,)})
    with pytest.raises(TypeError, match=named(name)):
        case.call(part, **{name: 7})
    with pytest.raises(TypeError, match=named(name)):
        case.call(part, **{name: None})


@families
def test_zero_sized_kernel_is_value_error(fam):
    case = Case(fam)
    w = case.w[..., :0]
    with pytest.raises(ValueError, match=named("w")):
        case.call("forward", w=w)
    with pytest.raises(ValueError, match=named("weight_shape")):
        case.call("backward_weight", weight_shape=w.shape)


def test_cuda_array_mixed_with_numpy_is_type_error():
    class FakeCudaArray:
        __cuda_array_interface__ = {"shape": (4, 2, 3, 2), "typestr": "<f8", "data": (0, False), "version": 3}
        shape, dtype = (4, 2, 3, 2), np.dtype(np.float64)

    case = Case(FAMILIES[0])
    with pytest.raises(TypeError, match=named("w")):
        case.call("forward", w=FakeCudaArray())


# ---------------------------------------------------------------- out and accumulate

OUT_PARTS = ["forward", "backward_input", "backward_weight", "backward_bias"]
# The inputs each part reads, which its out may not overlap.
OUT_INPUTS = {"forward": ("x", "w", "b"), "backward_input": ("dy", "w"),
              "backward_weight": ("dy", "x"), "backward_bias": ("dy",)}


@families
@pytest.mark.parametrize("part", OUT_PARTS)
def test_out_errors(fam, part):
    case = Case(fam)
    shape = case.outputs()[part]
    with pytest.raises(ValueError, match=named("out")):
        case.call(part, out=np.empty(shape[:-1] + (shape[-1] + 1,)))
    with pytest.raises(ValueError, match=named("out")):
        case.call(part, out=np.empty(shape + (1,)))
    with pytest.raises(TypeError, match=named("out")):
        case.call(part, out=np.empty(shape, dtype=np.float32))
    with pytest.raises(TypeError, match=named("out")):
        case.call(part, out=np.empty(shape, dtype=np.int64))
    with pytest.raises(TypeError, match=named("out")):
        case.call(part, out=np.empty(shape).tolist())
    strided = np.empty(shape[:-1] + (2 * shape[-1],))[..., ::2]
    with pytest.raises(ValueError, match=named("out")):
        case.call(part, out=strided)
    fortran = np.asfortranarray(np.empty(shape))
    if not fortran.flags.c_contiguous:
        with pytest.raises(ValueError, match=named("out")):
            case.call(part, out=fortran)
    read_only = np.empty(shape)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match=named("out")):
        case.call(part, out=read_only)


@families
@pytest.mark.parametrize("part,arg", [(p, a) for p in OUT_PARTS for a in OUT_INPUTS[p]], ids=lambda v: v)
def test_out_overlapping_an_input_is_value_error(fam, part, arg):
    case = Case(fam)
    shape = case.outputs()[part]
    value = getattr(case, arg)
    size = max(value.size, int(np.prod(shape)))
    base = np.zeros(size)
    alias = base[: value.size].reshape(value.shape)
    alias[...] = value
    out = base[: int(np.prod(shape))].reshape(shape)
    with pytest.raises(ValueError, match=named("out")):
        case.call(part, **{arg: alias, "out": out})
    # an input that is a view into the tail of the out buffer overlaps as well
    base = np.zeros(size + 1)
    alias = base[size + 1 - value.size :].reshape(value.shape)
    alias[...] = value
    out = base[: int(np.prod(shape))].reshape(shape)
    if np.shares_memory(alias, out):
        with pytest.raises(ValueError, match=named("out")):
            case.call(part, **{arg: alias, "out": out})


@families
@pytest.mark.parametrize("part", ["backward_weight", "backward_bias"])
def test_accumulate_errors(fam, part):
    case = Case(fam)
    with pytest.raises(TypeError, match=named("accumulate")):
        case.call(part, out=np.zeros(case.outputs()[part]), accumulate="yes")
    with pytest.raises(TypeError, match=named("accumulate")):
        case.call(part, out=np.zeros(case.outputs()[part]), accumulate=1)
    # accumulating into nothing is a mistake, not a fresh gradient
    with pytest.raises(ValueError, match=named("out")):
        case.call(part, accumulate=True)


# ---------------------------------------------------------------- geometry parameters

GEOMETRY_PARTS = ["forward", "backward_input", "backward_weight", "backward"]

BAD_STRIDES = [  # (value, exception); the tuple lengths are wrong for both ranks
    (0, ValueError), (-1, ValueError), (1.5, TypeError), (2.0, TypeError), ("2", TypeError), (True, TypeError),
    (None, TypeError), ((1, 1, 1), ValueError), ((1, 0), ValueError),
]


@families
@pytest.mark.parametrize("part", GEOMETRY_PARTS)
@pytest.mark.parametrize("name", ["stride", "dilation"])
@pytest.mark.parametrize("value,error", BAD_STRIDES, ids=repr)
def test_bad_stride_and_dilation(fam, part, name, value, error):
    with pytest.raises(error, match=named(name)):
        Case(fam).call(part, **{name: value})


BAD_PADDINGS = [
    (-1, ValueError), (1.5, TypeError), (None, TypeError), (True, TypeError), ("full", ValueError),
    ("SAME", ValueError), ((1, 1, 1), ValueError), ((1, -1), ValueError), ((1, 1.0), TypeError),
]
BAD_PADDINGS_2D = [
    (((1, 1), (1,)), ValueError), (((1, -1), (0, 0)), ValueError), (((0, 0), (0, 0), (0, 0)), ValueError),
]


@families
@pytest.mark.parametrize("part", GEOMETRY_PARTS)
@pytest.mark.parametrize("value,error", BAD_PADDINGS + BAD_PADDINGS_2D, ids=repr)
def test_bad_padding(fam, part, value, error):
    if fam.spatial == 1 and (value, error) in BAD_PADDINGS_2D:
        error = (ValueError, TypeError)  # a pair of pairs is no 1-D padding either; either class names it
    with pytest.raises(error, match=named("padding")):
        Case(fam).call(part, padding=value)


@families
@pytest.mark.parametrize("part", GEOMETRY_PARTS)
def test_same_padding_needs_stride_one(fam, part):
    with pytest.raises(ValueError, match=named("padding")):
        Case(fam).call(part, padding="same", stride=2)
    if fam.spatial == 2:
        with pytest.raises(ValueError, match=named("padding")):
            Case(fam).call(part, padding="same", stride=(1, 2))


@families
@pytest.mark.parametrize("part", GEOMETRY_PARTS)
@pytest.mark.parametrize("value,error", [(0, ValueError), (-2, ValueError), (2.0, TypeError), ("2", TypeError),
                                         (None, TypeError), ((2,), TypeError), (True, TypeError)], ids=repr)
def test_bad_groups(fam, part, value, error):
    with pytest.raises(error, match=named("groups")):
        Case(fam).call(part, groups=value)


@families
@pytest.mark.parametrize("part", GEOMETRY_PARTS)
def test_groups_must_divide_channels_and_filters(fam, part):
    # C = 4, groups = 3: 3 does not divide C (the weight is built for groups = 2 and must not matter first)
    with pytest.raises(ValueError, match=named("groups")):
        Case(fam).call(part, groups=3)
    # C = 4, F = 6, groups = 4 divides C but not F
    case = Case(fam, c=4, f=6, groups=2)
    w = case.w[..., :1, :] if fam.spatial == 1 else case.w[..., :1, :, :]  # C/groups = 1 channel per filter
    case.w = np.ascontiguousarray(w)
    with pytest.raises(ValueError, match=named("groups")):
        case.call(part, groups=4)


@pytest.mark.parametrize("fam", TILED, ids=str)
@pytest.mark.parametrize("part", GEOMETRY_PARTS + ["backward_bias"])
@pytest.mark.parametrize("value,error", [("cyclic", ValueError), ("Periodic", ValueError), ("", ValueError),
                                         (1, TypeError), (None, TypeError)], ids=repr)
def test_bad_tile_mode(fam, part, value, error):
    with pytest.raises(error, match=named("tile_mode")):
        Case(fam).call(part, tile_mode=value)


@families
@pytest.mark.parametrize("part", GEOMETRY_PARTS)
def test_kernel_larger_than_padded_input(fam, part):
    weight = "weight_shape" if part == "backward_weight" else "w"
    # 5x6 input (1-D: 6), 3x2 kernel: dilations (3, 6) make it 7x7 (1-D: 7)
    with pytest.raises(ValueError, match=named(weight)):
        Case(fam).call(part, dilation=(3, 6) if fam.spatial == 2 else 6)
    if fam.sharing != "local":  # a local weight cannot even be shaped for an empty output
        # 2x1 input (1-D: 1), 3x2 kernel, no padding
        with pytest.raises(ValueError, match=named(weight)):
            Case(fam, size=(2, 1), kernel=(3, 2), tiles=(1, 1)).call(part)


@families
def test_padding_makes_a_large_kernel_fit(fam):
    case = Case(fam, size=(2, 1), kernel=(3, 2), tiles=(1, 1), padding=1)
    y = case.call("forward")
    assert y.shape[2:] == case.dy.shape[2:]


# ---------------------------------------------------------------- geometry: sizes and padding


def test_output_size_matches_formula_and_window_count():
    for size, kernel, stride, dilation, before, after in itertools.product(
            range(1, 9), range(1, 4), range(1, 4), range(1, 3), range(3), range(3)):
        expected = (size + before + after - dilation * (kernel - 1) - 1) // stride + 1
        assert geometry.output_size(size, kernel, stride, dilation, before, after) == expected
        # the number of window starts i * stride whose last tap lands inside the padded input
        windows = sum(1 for i in range(size + before + after)
                      if i * stride + dilation * (kernel - 1) < size + before + after)
        assert max(expected, 0) == windows


@pytest.mark.parametrize("kernel,dilation,pads", [
    (1, 1, (0, 0)), (2, 1, (0, 1)), (3, 1, (1, 1)), (4, 1, (1, 2)), (5, 1, (2, 2)),
    (2, 2, (1, 1)), (2, 3, (1, 2)), (3, 2, (2, 2)), (4, 3, (4, 5)),
])
def test_same_padding_split(kernel, dilation, pads):
    top, left, bottom, right = geometry.padding4("same", (kernel, 1), (1, 1), (dilation, 1))
    assert (top, bottom) == pads and (left, right) == (0, 0)
    top, left, bottom, right = geometry.padding4("same", (1, kernel), (1, 1), (1, dilation))
    assert (left, right) == pads and (top, bottom) == (0, 0)
    for size in range(1, 7):
        g = geometry.conv_geometry((1, 1, size, size), 1, (kernel, kernel), 1, "same", dilation, 1)
        assert (g.oh, g.ow) == (size, size)


@pytest.mark.parametrize("padding,expected", [
    (0, (0, 0, 0, 0)), (2, (2, 2, 2, 2)), ((1, 3), (1, 3, 1, 3)), ([1, 3], (1, 3, 1, 3)),
    (((1, 2), (3, 4)), (1, 3, 2, 4)), ("valid", (0, 0, 0, 0)),
])
def test_padding4_spellings(padding, expected):
    assert geometry.padding4(padding, (3, 3), (2, 2), (1, 1)) == expected


def test_padding1d_and_stride1d():
    assert geometry.padding1d(2) == (0, 2)
    assert geometry.padding1d((1, 3)) == ((0, 0), (1, 3))
    assert geometry.padding1d("same") == "same"
    assert geometry.stride1d(3, "stride") == 3
    assert geometry.stride1d((3,), "stride") == 3
    with pytest.raises(ValueError, match=named("stride")):
        geometry.stride1d((1, 2), "stride")
    with pytest.raises(ValueError, match=named("padding")):
        geometry.padding4("same", (3, 3), (2, 1), (1, 1))


def test_conv_geometry_fields():
    g = geometry.conv_geometry((2, 6, 9, 11), 4, (3, 2), (2, 3), ((1, 0), (2, 1)), (1, 2), 2)
    assert (g.n, g.c, g.h, g.w, g.f, g.kh, g.kw) == (2, 6, 9, 11, 4, 3, 2)
    assert (g.stride_h, g.stride_w, g.dilation_h, g.dilation_w, g.groups) == (2, 3, 1, 2, 2)
    assert (g.pad_top, g.pad_left, g.pad_bottom, g.pad_right) == (1, 2, 0, 1)
    assert (g.oh, g.ow) == ((9 + 1 - 2 - 1) // 2 + 1, (11 + 3 - 2 - 1) // 3 + 1)
    assert g.output_shape == (2, 4, g.oh, g.ow)


OUTPUT_QUERIES = [
    # (query, 2-D?, sharing); each answers the shape the reference forward returns
    ("conv2d", 2, "shared"), ("tiled_conv2d", 2, "tiled"), ("local_conv2d", 2, "local"),
    ("conv1d", 1, "shared"), ("tiled_conv1d", 1, "tiled"), ("local_conv1d", 1, "local"),
]


@pytest.mark.parametrize("name,dims,sharing", OUTPUT_QUERIES)
@pytest.mark.parametrize("params", [
    dict(), dict(stride=2, padding=1), dict(padding="same", dilation=2), dict(stride=3, dilation=2, groups=2),
    dict(padding="valid", groups=2),
])
def test_output_shape_queries(name, dims, sharing, params):
    query = getattr(geometry, f"{name}_output_shape")
    assert getattr(lcnumba, f"{name}_output_shape") is query
    n, c, f = 2, 4, 6
    size, kernel = (9, 10)[-dims:], (3, 2)[-dims:]
    x = np.zeros((n, c) + size)
    bank = (f, c // params.get("groups", 1)) + kernel
    if sharing == "local":
        shape = query(x.shape, kernel if dims == 2 else kernel[0], f, **params)
        w = np.zeros(shape[2:] + bank)
    else:
        w = np.zeros(((2,) * dims if sharing == "tiled" else ()) + bank)
        shape = query(x.shape, w.shape, **params)
    assert shape == getattr(testing, f"{name}_forward")(x, w, **params).shape


# ---------------------------------------------------------------- geometry: tiles, and segments (lcnumba.cpu.segments)


def _tile(index, size, tiles, mode):
    return index % tiles if mode == "periodic" else index * tiles // size


def test_tile_of():
    for size, tiles, mode in itertools.product(range(1, 9), range(1, 10), ("periodic", "block")):
        for i in range(size):
            assert geometry.tile_of(i, size, tiles, mode) == _tile(i, size, tiles, mode)
    # block tiles are contiguous and in order; every tile is used when there are no more tiles than positions
    for size, tiles in itertools.product(range(1, 9), range(1, 9)):
        seq = [geometry.tile_of(i, size, tiles, "block") for i in range(size)]
        assert seq == sorted(seq)
        if tiles <= size:
            assert set(seq) == set(range(tiles))


SEGMENT_SHAPES = [(oh, ow, th, tw) for oh, ow in [(1, 1), (1, 5), (4, 1), (3, 5), (6, 4)]
                  for th, tw in [(1, 1), (2, 3), (3, 2), (oh, ow), (oh + 1, ow + 2), (7, 1)]]


@pytest.mark.parametrize("mode", ["periodic", "block"])
@pytest.mark.parametrize("oh,ow,th,tw", SEGMENT_SHAPES)
def test_segments_cover_every_position_once(mode, oh, ow, th, tw):
    by_tile, tile_ptr, by_row, row_ptr = segments.segments(oh, ow, th, tw, mode)
    for array in (by_tile, tile_ptr, by_row, row_ptr):
        assert array.dtype == np.int64 and not array.flags.writeable
    assert by_tile.shape[1] == 5 and by_row.shape == by_tile.shape
    seen = np.zeros((oh, ow), dtype=int)
    for tile, i, j0, step, count in by_tile:
        assert count >= 1 and step >= 1
        for m in range(count):
            j = j0 + m * step
            assert 0 <= i < oh and 0 <= j < ow
            assert tile == _tile(i, oh, th, mode) * tw + _tile(j, ow, tw, mode)
            seen[i, j] += 1
    assert (seen == 1).all()
    # the same segments in two orders, each indexed by its pointer array
    assert sorted(map(tuple, by_tile)) == sorted(map(tuple, by_row))
    assert tile_ptr.shape == (th * tw + 1,) and tile_ptr[0] == 0 and tile_ptr[-1] == len(by_tile)
    for t in range(th * tw):
        assert (by_tile[tile_ptr[t] : tile_ptr[t + 1], 0] == t).all()
    assert (np.diff(by_tile[:, 0]) >= 0).all()
    assert row_ptr.shape == (oh + 1,) and row_ptr[0] == 0 and row_ptr[-1] == len(by_row)
    for i in range(oh):
        assert (by_row[row_ptr[i] : row_ptr[i + 1], 1] == i).all()


@pytest.mark.parametrize("oh,ow", [(1, 1), (3, 4), (5, 2)])
def test_segments_of_shared_and_local_weights(oh, ow):
    # conv2d: one tile, one segment per row covering it; local: one segment per position
    for mode in ("periodic", "block"):
        by_tile, tile_ptr, _, _ = segments.segments(oh, ow, 1, 1, mode)
        assert len(by_tile) == oh and (by_tile[:, 0] == 0).all() and (by_tile[:, 4] == ow).all()
        by_tile, tile_ptr, _, _ = segments.segments(oh, ow, oh, ow, mode)
        assert len(by_tile) == oh * ow and (by_tile[:, 4] == 1).all()
        assert (np.diff(tile_ptr) == 1).all()


def test_remembered_plans_accept_and_refuse_as_before():
    """A plan remembered for ``stride=1`` must not answer for ``True`` or ``1.0`` (equal, and hashed alike)."""
    x = np.ones((1, 2, 5, 5))
    w = np.ones((3, 2, 3, 3))
    expected = lcnumba.conv2d_forward(x, w, stride=1, padding=(1, 1))
    for stride in (True, 1.0, (1, True), (1.0, 1)):
        with pytest.raises(TypeError, match=named("stride")):
            lcnumba.conv2d_forward(x, w, stride=stride, padding=(1, 1))
    with pytest.raises(TypeError, match=named("padding")):
        lcnumba.conv2d_forward(x, w, stride=1, padding=(1, True))
    for stride in (np.int64(1), [1, 1], (1, np.int32(1))):  # accepted spellings outside the memo
        np.testing.assert_array_equal(lcnumba.conv2d_forward(x, w, stride=stride, padding=(1, 1)), expected)
