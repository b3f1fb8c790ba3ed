"""lcnumba.interop.keras: Keras weights reproduce Keras's outputs in lcnumba, and convert back unchanged.

Two independent references:

* the fixtures ``tests/fixtures/keras/*.npz``: small layers built, run and saved once by
  tf-keras 2.21 on TensorFlow 2.21 (``tools/make_keras_fixtures.py``; CI needs no TensorFlow);
* ``_keras_forward`` below: Keras 2's forward transcribed from its source, loop for loop
  (``backend.local_conv``, ``locally_connected_utils.local_conv_matmul`` /
  ``local_conv_sparse_matmul``, ``conv_utils.conv_kernel_idxs`` / ``conv_kernel_mask`` /
  ``conv_connected_inputs``, ``backend.bias_add``), checked against the fixtures and then
  used on geometries the fixtures do not cover.
"""

import doctest
import itertools
from pathlib import Path

import numpy as np
import pytest

import lcnumba
from lcnumba import testing
from lcnumba.interop import keras

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "keras"
CASES = sorted(p.stem for p in FIXTURES.glob("*.npz"))
LOCAL_CASES = [c for c in CASES if c.startswith("lc")]
CONV_CASES = [c for c in CASES if c.startswith("conv")]


def _load(name):
    with np.load(FIXTURES / f"{name}.npz") as data:
        return {key: (data[key].item() if data[key].ndim == 0 else data[key]) for key in data.files}


def _layer_args(case):
    """The converter's keyword arguments for a fixture (or a random case), by its layer kind."""
    args = {"input_shape": tuple(int(n) for n in case["input_shape"]),
            "strides": tuple(int(s) for s in case["strides"]),
            "padding": str(case["padding"]), "data_format": str(case["data_format"])}
    if str(case["layer"]).startswith("Locally"):
        args["kernel_size"] = tuple(int(k) for k in case["kernel_size"])
        args["implementation"] = int(case["implementation"])
    else:
        args["dilation_rate"] = tuple(int(d) for d in case["dilation_rate"])
        args["groups"] = int(case["groups"])
    return args


# ---------------------------------------------------------------- Keras 2, from its source


def _conv_output_length(n, k, padding, s):  # conv_utils.conv_output_length (dilation 1)
    length = n if padding == "same" else n - k + 1
    return (length + s - 1) // s


def _connected_inputs(sizes, kernel, position, strides, padding):  # conv_utils.conv_connected_inputs
    ranges = []
    for d in range(len(sizes)):
        left_shift = int(kernel[d] / 2)
        right_shift = kernel[d] - left_shift
        center = position[d] * strides[d]
        if padding == "valid":
            center += left_shift
        ranges.append(range(max(0, center - left_shift), min(sizes[d], center + right_shift)))
    return ranges


def _out_sizes(sizes, kernel, strides, padding):
    return tuple(_conv_output_length(n, k, padding, s) for n, k, s in zip(sizes, kernel, strides))


def _kernel_idxs(sizes, kernel, strides, padding, filters_in, filters_out, data_format):  # conv_kernel_idxs
    out = _out_sizes(sizes, kernel, strides, padding)
    if data_format == "channels_first":
        def concat(spatial, f):
            return (f,) + tuple(spatial)
    else:
        def concat(spatial, f):
            return tuple(spatial) + (f,)
    for output_position in itertools.product(*[range(o) for o in out]):
        for input_position in itertools.product(*_connected_inputs(sizes, kernel, output_position, strides, padding)):
            for f_in in range(filters_in):
                for f_out in range(filters_out):
                    yield (int(np.ravel_multi_index(concat(output_position, f_out), concat(out, filters_out))),
                           int(np.ravel_multi_index(concat(input_position, f_in), concat(sizes, filters_in))))


def _kernel_mask(sizes, kernel, strides, padding):  # conv_utils.conv_kernel_mask
    out = _out_sizes(sizes, kernel, strides, padding)
    mask = np.zeros(tuple(sizes) + out, dtype=bool)
    for output_position in itertools.product(*[range(o) for o in out]):
        for input_position in itertools.product(*_connected_inputs(sizes, kernel, output_position, strides, padding)):
            mask[tuple(input_position) + output_position] = True
    return mask


def _locally_connected_mask(sizes, kernel, strides, padding, data_format):  # get_locallyconnected_mask
    mask = _kernel_mask(sizes, kernel, strides, padding)
    ndims = mask.ndim // 2
    if data_format == "channels_first":
        return np.expand_dims(np.expand_dims(mask, 0), -ndims - 1)
    return np.expand_dims(np.expand_dims(mask, ndims), -1)


def _split(input_shape, data_format):
    if data_format == "channels_last":
        return tuple(input_shape[:-1]), input_shape[-1]
    return tuple(input_shape[1:]), input_shape[0]


def _keras_forward(x, kernel, bias, *, input_shape, kernel_size, strides, padding, data_format, implementation):
    """A Keras 2 LocallyConnected{1,2}D forward (no activation), in float64, on x of the layer's data format."""
    sizes, channels = _split(input_shape, data_format)
    out = _out_sizes(sizes, kernel_size, strides, padding)
    n = x.shape[0]
    x = x.astype(np.float64)
    filters = bias.shape[-1]
    if implementation == 1:  # backend.local_conv
        feature_dim = kernel.shape[1]
        xs = []
        for position in itertools.product(*[range(o) for o in out]):
            slices = [slice(None)] + ([slice(None)] if data_format == "channels_first" else [])
            slices += [slice(position[d] * strides[d], position[d] * strides[d] + kernel_size[d])
                       for d in range(len(out))]
            slices += [slice(None)] if data_format == "channels_last" else []
            xs.append(x[tuple(slices)].reshape(1, -1, feature_dim))
        y = np.matmul(np.concatenate(xs, axis=0), kernel.astype(np.float64))  # batch_dot over positions
        y = y.reshape(out + (-1, filters))
        r = len(out)
        permutation = [r, r + 1] + list(range(r)) if data_format == "channels_first" else [r] + list(range(r)) + [r + 1]
        y = y.transpose(permutation)
    elif implementation == 2:  # local_conv_matmul
        mask = _locally_connected_mask(sizes, kernel_size, strides, padding, data_format)
        masked = (mask * kernel).astype(np.float64)
        split = masked.ndim // 2
        y = x.reshape(n, -1) @ masked.reshape(int(np.prod(masked.shape[:split])), -1)
    else:  # local_conv_sparse_matmul
        idxs = sorted(_kernel_idxs(sizes, kernel_size, strides, padding, channels, filters, data_format))
        dense = np.zeros((int(np.prod(out)) * filters, int(np.prod(sizes)) * channels))
        for value, (o, i) in zip(kernel.astype(np.float64), idxs):
            dense[o, i] = value
        y = (dense @ x.reshape(n, -1).T).T
    y = y.reshape((n,) + ((filters,) + out if data_format == "channels_first" else out + (filters,)))
    if data_format == "channels_first":  # backend.bias_add: a reshape of (*out, F), not a transpose
        return y + bias.reshape((1, filters) + out)
    return y + bias.reshape((1,) + bias.shape)


def _to_nchw(array, data_format):
    return np.moveaxis(array, -1, 1) if data_format == "channels_last" else array


def _from_nchw(array, data_format):
    return np.moveaxis(array, 1, -1) if data_format == "channels_last" else array


def _converters(layer):
    rank = 2 if layer.endswith("2D") else 1
    if layer.startswith("Locally"):
        return (getattr(keras, f"from_locally_connected{rank}d"), getattr(keras, f"to_locally_connected{rank}d"),
                getattr(lcnumba, f"local_conv{rank}d_forward"), getattr(testing, f"local_conv{rank}d_forward"))
    return (getattr(keras, f"from_conv{rank}d"), getattr(keras, f"to_conv{rank}d"),
            getattr(lcnumba, f"conv{rank}d_forward"), getattr(testing, f"conv{rank}d_forward"))


# ---------------------------------------------------------------- the fixtures


@pytest.mark.parametrize("name", CASES)
def test_fixture_reproduces_keras(name):
    case = _load(name)
    convert, _, forward, _ = _converters(case["layer"])
    kernel, bias = case["kernel"].copy(), case["bias"].copy()
    r = convert(case["kernel"], case["bias"], **_layer_args(case))
    y = _from_nchw(forward(_to_nchw(case["x"], case["data_format"]), r.w, r.b, **r.kwargs), case["data_format"])
    assert y.dtype == np.float32 and y.shape == case["y"].shape
    np.testing.assert_allclose(y, case["y"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(case["kernel"], kernel)  # inputs are never written
    np.testing.assert_array_equal(case["bias"], bias)
    assert "tf-keras" in case["made_with"]


@pytest.mark.parametrize("name", LOCAL_CASES)
def test_transcribed_keras_forward_matches_the_fixture(name):
    case = _load(name)
    args = _layer_args(case)
    y = _keras_forward(case["x"], case["kernel"], case["bias"], **args)
    np.testing.assert_allclose(y, case["y"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", LOCAL_CASES)
def test_fixture_round_trip(name):
    case = _load(name)
    args = _layer_args(case)
    convert, back, _, _ = _converters(case["layer"])
    r = convert(case["kernel"], case["bias"], **args)
    del args["kernel_size"]
    kernel, bias = back(r.w, r.b, **args)
    np.testing.assert_array_equal(bias, case["bias"])
    assert kernel.dtype == np.float32 and kernel.flags.c_contiguous
    if case["implementation"] == 2:
        # Keras never reads the entries outside its mask: they come back as zeros
        sizes, _ = _split(args["input_shape"], args["data_format"])
        mask = np.broadcast_to(_locally_connected_mask(sizes, tuple(case["kernel_size"]), args["strides"],
                                                       args["padding"], args["data_format"]), kernel.shape)
        np.testing.assert_array_equal(kernel[mask], case["kernel"][mask])
        assert not np.any(kernel[~mask]) and np.all(case["kernel"][~mask] != 0)
    else:
        np.testing.assert_array_equal(kernel, case["kernel"])


@pytest.mark.parametrize("name", CONV_CASES)
def test_conv_fixture_round_trip(name):
    case = _load(name)
    convert, back, _, _ = _converters(case["layer"])
    r = convert(case["kernel"], case["bias"], **_layer_args(case))
    kernel, bias = back(r.w, r.b)
    np.testing.assert_array_equal(kernel, case["kernel"])
    np.testing.assert_array_equal(bias, case["bias"])


# ---------------------------------------------------------------- geometries beyond the fixtures

GEOMETRIES = [
    # input_shape (channels_last), kernel_size, strides, padding
    ((7, 6, 2), (3, 3), (2, 2), "valid"),
    ((5, 8, 1), (1, 4), (3, 1), "valid"),
    ((7, 6, 2), (3, 4), (2, 3), "same"),
    ((4, 5, 3), (4, 1), (1, 2), "same"),
    ((6, 5, 2), (6, 5), (1, 1), "valid"),
    ((9, 2), (4,), (2,), "valid"),
    ((9, 2), (3,), (4,), "same"),
    ((6, 1), (2,), (3,), "same"),  # a window cut short at the far edge
]


def _random_case(geometry, data_format, implementation, rng, filters=3):
    shape, kernel_size, strides, padding = geometry
    sizes, channels = shape[:-1], shape[-1]
    input_shape = shape if data_format == "channels_last" else (channels,) + sizes
    out = _out_sizes(sizes, kernel_size, strides, padding)
    if implementation == 1:
        kernel_shape = (int(np.prod(out)), int(np.prod(kernel_size)) * channels, filters)
    elif implementation == 2:
        kernel_shape = (sizes + (channels,) + out + (filters,) if data_format == "channels_last"
                        else (channels,) + sizes + (filters,) + out)
    else:
        kernel_shape = (len(list(_kernel_idxs(sizes, kernel_size, strides, padding, channels, filters,
                                              data_format))),)
    args = {"input_shape": input_shape, "kernel_size": kernel_size, "strides": strides, "padding": padding,
            "data_format": data_format, "implementation": implementation}
    return (rng.standard_normal(kernel_shape), rng.standard_normal(out + (filters,)),
            rng.standard_normal((2,) + input_shape), args)


def _implementations(padding):
    return (1, 2, 3) if padding == "valid" else (2, 3)


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("data_format", keras.DATA_FORMATS)
def test_random_layers_reproduce_the_transcribed_keras(geometry, data_format):
    rng = np.random.default_rng(len(geometry[0]) * 10 + geometry[1][0])
    for implementation in _implementations(geometry[3]):
        kernel, bias, x, args = _random_case(geometry, data_format, implementation, rng)
        convert, _, _, reference = _converters(f"LocallyConnected{len(geometry[1])}D")
        r = convert(kernel, bias, **args)
        assert r.w.dtype == np.float64 and r.w.flags.c_contiguous and r.b.flags.c_contiguous
        y = _from_nchw(reference(_to_nchw(x, data_format), r.w, r.b, **r.kwargs), data_format)
        np.testing.assert_allclose(y, _keras_forward(x, kernel, bias, **args), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("data_format", keras.DATA_FORMATS)
def test_lcnumba_weights_survive_keras_and_keep_their_output(geometry, data_format):
    """lcnumba -> Keras -> lcnumba is the identity on the taps inside the input; Keras's output is lcnumba's."""
    rng = np.random.default_rng(7)
    shape, kernel_size, strides, padding = geometry
    sizes, channels = shape[:-1], shape[-1]
    rank = len(kernel_size)
    out = _out_sizes(sizes, kernel_size, strides, padding)
    w = rng.standard_normal(out + (3, channels) + kernel_size)
    b = rng.standard_normal((3,) + out)
    _, back, _, reference = _converters(f"LocallyConnected{rank}D")
    convert = _converters(f"LocallyConnected{rank}D")[0]
    # the taps inside the input, from Keras's own connectivity
    inside = np.zeros(w.shape, dtype=bool)
    for position in itertools.product(*[range(o) for o in out]):
        first = [(position[d] * strides[d] - (0 if padding == "valid" else kernel_size[d] // 2)) for d in range(rank)]
        for cell in itertools.product(*_connected_inputs(sizes, kernel_size, position, strides, padding)):
            inside[position + (slice(None), slice(None)) + tuple(c - f for c, f in zip(cell, first))] = True
    input_shape = shape if data_format == "channels_last" else (channels,) + sizes
    x = rng.standard_normal((2,) + input_shape)
    for implementation in _implementations(padding):
        args = {"input_shape": input_shape, "strides": strides, "padding": padding, "data_format": data_format,
                "implementation": implementation}
        kernel, bias = back(w, b, **args)
        y = _keras_forward(x, kernel, bias, kernel_size=kernel_size, **args)
        r = convert(kernel, bias, kernel_size=kernel_size, **args)
        np.testing.assert_allclose(y, _from_nchw(reference(_to_nchw(x, data_format), w, b, **r.kwargs), data_format),
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(r.w, np.where(inside, w, 0))
        np.testing.assert_array_equal(r.b, b)


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("data_format", keras.DATA_FORMATS)
def test_sparse_indices_are_keras_kernel_idxs(geometry, data_format):
    shape, kernel_size, strides, padding = geometry
    sizes, channels = shape[:-1], shape[-1]
    input_shape = shape if data_format == "channels_last" else (channels,) + sizes
    idxs = keras.sparse_indices(input_shape, kernel_size, 2, strides=strides, padding=padding,
                                data_format=data_format)
    expected = sorted(_kernel_idxs(sizes, kernel_size, strides, padding, channels, 2, data_format))
    assert idxs.dtype == np.int64
    np.testing.assert_array_equal(idxs, np.array(expected, dtype=np.int64).reshape(-1, 2))


def test_float64_and_float32_keep_their_dtype():
    for dtype in (np.float32, np.float64):
        kernel = np.ones((2, 6, 4), dtype)
        r = keras.from_locally_connected1d(kernel, np.zeros((2, 4), dtype), input_shape=(4, 2), kernel_size=3)
        assert r.w.dtype == r.b.dtype == dtype
        k, b = keras.to_locally_connected1d(r.w, r.b, input_shape=(4, 2))
        assert k.dtype == b.dtype == dtype
        np.testing.assert_array_equal(k, kernel)


def test_without_bias():
    kernel = np.arange(2 * 6 * 4, dtype=np.float32).reshape(2, 6, 4)
    r = keras.from_locally_connected1d(kernel, input_shape=(2, 4), kernel_size=3, data_format="channels_first")
    assert r.b is None
    back, bias = keras.to_locally_connected1d(r.w, input_shape=(2, 4), data_format="channels_first")
    assert bias is None
    np.testing.assert_array_equal(back, kernel)


# ---------------------------------------------------------------- shared convolution padding

# (size, kernel, stride, dilation) -> TensorFlow's SAME (before, after), worked by hand from
# out = ceil(size / stride), total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
SAME = [
    ((6, 2, 1, 1), (0, 1)),
    ((6, 3, 1, 1), (1, 1)),
    ((6, 4, 1, 1), (1, 2)),
    ((6, 3, 2, 1), (0, 1)),   # out 3: 2*2 + 3 - 6 = 1
    ((7, 3, 2, 1), (1, 1)),   # out 4: 3*2 + 3 - 7 = 2
    ((5, 2, 2, 1), (0, 1)),   # out 3: 2*2 + 2 - 5 = 1
    ((8, 1, 3, 1), (0, 0)),   # out 3: 2*3 + 1 - 8 < 0
    ((6, 3, 1, 2), (2, 2)),   # extent 5
    ((9, 4, 4, 1), (1, 2)),   # out 3: 2*4 + 4 - 9 = 3
]


@pytest.mark.parametrize("sizes, expected", SAME)
def test_conv_same_padding_is_tensorflows(sizes, expected):
    n, k, s, d = sizes
    r = keras.from_conv1d(np.zeros((k, 2, 3)), input_shape=(n, 2), strides=s, padding="SAME", dilation_rate=d)
    assert r.padding == expected
    r2 = keras.from_conv2d(np.zeros((k, 1, 2, 3)), input_shape=(2, n, 4), strides=(s, 1), padding="same",
                           dilation_rate=(d, 1), data_format="channels_first")
    assert r2.padding[0] == expected
    out = lcnumba.conv1d_output_shape((1, 2, n), (3, 2, k), stride=s, padding=r.padding, dilation=d)
    assert out[2] == -(-n // s)


def test_conv_padding_without_input_shape_at_stride_1_and_causal():
    assert keras.from_conv2d(np.zeros((4, 3, 1, 1)), padding="same").padding == ((1, 2), (1, 1))
    assert keras.from_conv1d(np.zeros((3, 1, 1)), padding="causal", dilation_rate=2).padding == (4, 0)
    assert keras.from_conv2d(np.zeros((4, 3, 1, 1))).padding == ((0, 0), (0, 0))


def test_conv_layouts():
    kernel = np.arange(2 * 3 * 4 * 6, dtype=np.float64).reshape(2, 3, 4, 6)  # (KH, KW, C/g, F)
    r = keras.from_conv2d(kernel, np.arange(6.0), input_shape=(5, 5, 8), groups=2)
    assert r.w.shape == (6, 4, 2, 3) and r.groups == 2 and r.kwargs["groups"] == 2
    for f, c, i, j in itertools.product(range(6), range(4), range(2), range(3)):
        assert r.w[f, c, i, j] == kernel[i, j, c, f]
    w1 = keras.from_conv1d(kernel[0]).w
    assert w1.shape == (6, 4, 3) and w1[5, 2, 1] == kernel[0, 1, 2, 5]
    np.testing.assert_array_equal(keras.to_conv1d(w1)[0], kernel[0])


# ---------------------------------------------------------------- errors


def _lc2(**overrides):
    args = {"kernel": np.zeros((8, 18, 2), np.float32), "bias": None, "input_shape": (6, 5, 3), "kernel_size": (3, 2),
            "strides": (1, 2), "padding": "valid", "data_format": "channels_last", "implementation": 1}
    args.update(overrides)
    kernel, bias = args.pop("kernel"), args.pop("bias")
    return keras.from_locally_connected2d(kernel, bias, **args)


@pytest.mark.parametrize("overrides, error, name", [
    ({"kernel": [[0.0]]}, TypeError, "kernel"),
    ({"kernel": np.zeros((8, 18, 2), np.int64)}, TypeError, "kernel"),
    ({"kernel": np.zeros((8, 18))}, ValueError, "kernel"),
    ({"kernel": np.zeros((8, 17, 2), np.float32)}, ValueError, "kernel"),
    ({"bias": np.zeros((4, 2, 2), np.float64)}, TypeError, "bias"),
    ({"bias": np.zeros((2, 4, 2), np.float32)}, ValueError, "bias"),
    ({"input_shape": 6}, TypeError, "input_shape"),
    ({"input_shape": (6, 5)}, ValueError, "input_shape"),
    ({"input_shape": (6, 0, 3)}, ValueError, "input_shape"),
    ({"input_shape": (2, 1, 3)}, ValueError, "input_shape"),
    ({"kernel_size": (3, 2, 1)}, ValueError, "kernel_size"),
    ({"kernel_size": 2.0}, TypeError, "kernel_size"),
    ({"strides": 0}, ValueError, "strides"),
    ({"padding": "full"}, ValueError, "padding"),
    ({"padding": 0}, TypeError, "padding"),
    ({"padding": "same"}, ValueError, "padding"),  # implementation 1 has only "valid"
    ({"data_format": "NHWC"}, ValueError, "data_format"),
    ({"implementation": 4}, ValueError, "implementation"),
    ({"implementation": "2"}, TypeError, "implementation"),
    ({"implementation": 2}, ValueError, "kernel"),
    ({"implementation": 3, "kernel": np.zeros(7, np.float32)}, ValueError, "kernel"),
    ({"implementation": 3, "kernel": np.zeros(0, np.float32)}, ValueError, "kernel"),
])
def test_from_locally_connected_errors(overrides, error, name):
    with pytest.raises(error, match=rf"^{name}: expected"):
        _lc2(**overrides)


def test_to_locally_connected_errors():
    w = np.zeros((4, 2, 2, 3, 3, 2), np.float32)
    # stride 1 makes Keras's output 4 x 4, not w's 4 x 2
    with pytest.raises(ValueError, match=r"^w: expected shape \(4, 4, 2, 3, 3, 2\)"):
        keras.to_locally_connected2d(w, input_shape=(6, 5, 3), strides=1)
    with pytest.raises(ValueError, match=r"^w: expected shape"):
        keras.to_locally_connected2d(w, input_shape=(6, 5, 4), strides=(1, 2))
    with pytest.raises(ValueError, match=r"^b: expected shape \(2, 4, 2\)"):
        keras.to_locally_connected2d(w, np.zeros((4, 2, 2), np.float32), input_shape=(6, 5, 3), strides=(1, 2))
    with pytest.raises(TypeError, match=r"^b: expected"):
        keras.to_locally_connected2d(w, np.zeros((2, 4, 2)), input_shape=(6, 5, 3), strides=(1, 2))
    with pytest.raises(ValueError, match=r"^w: expected"):
        keras.to_locally_connected1d(w, input_shape=(6, 3))
    with pytest.raises(ValueError, match=r"^padding: expected 'valid'"):
        keras.to_locally_connected2d(w, input_shape=(6, 5, 3), strides=(1, 2), padding="same")


def test_conv_errors():
    kernel = np.zeros((3, 3, 2, 4), np.float32)
    with pytest.raises(ValueError, match=r"^input_shape: expected the input shape"):
        keras.from_conv2d(kernel, padding="same", strides=2)
    with pytest.raises(ValueError, match=r"^kernel: expected a number of filters"):
        keras.from_conv2d(kernel, groups=3)
    with pytest.raises(ValueError, match=r"^kernel: expected C / groups = 2 / 2 channels on axis 2"):
        keras.from_conv2d(kernel, input_shape=(5, 5, 2), groups=2)
    with pytest.raises(ValueError, match=r"^kernel: expected C / groups = 3 / 1"):
        keras.from_conv2d(kernel, input_shape=(3, 5, 5), data_format="channels_first")
    with pytest.raises(ValueError, match=r"^padding: expected one of"):
        keras.from_conv2d(kernel, padding="causal")
    with pytest.raises(ValueError, match=r"^bias: expected shape \(4,\)"):
        keras.from_conv2d(kernel, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"^dilation_rate: expected"):
        keras.from_conv1d(kernel[0], dilation_rate=0)
    with pytest.raises(ValueError, match=r"^w: expected"):
        keras.to_conv2d(kernel[0])
    with pytest.raises(ValueError, match=r"^b: expected shape \(3,\)"):
        keras.to_conv1d(kernel[0], np.zeros(4, np.float32))


def test_sparse_indices_errors():
    with pytest.raises(TypeError, match=r"^input_shape: expected"):
        keras.sparse_indices(7, 3, 2)
    with pytest.raises(ValueError, match=r"^input_shape: expected"):
        keras.sparse_indices((7,), 3, 2)
    with pytest.raises(ValueError, match=r"^filters: expected"):
        keras.sparse_indices((7, 2), 3, 0)


@pytest.mark.parametrize("name", ["lc2d_impl3_same_cf", "lc1d_impl1_valid_cl"])
def test_fixture_reproduces_keras_on_cuda(name):
    """The converted weights are plain arrays: on a CUDA device (or the simulator) they give Keras's output too."""
    cuda = pytest.importorskip("numba.cuda")
    case = _load(name)
    convert, _, forward, _ = _converters(case["layer"])
    r = convert(case["kernel"], case["bias"], **_layer_args(case))
    x = cuda.to_device(np.ascontiguousarray(_to_nchw(case["x"], case["data_format"])))
    y = forward(x, cuda.to_device(r.w), cuda.to_device(r.b), **r.kwargs).copy_to_host()
    np.testing.assert_allclose(_from_nchw(y, case["data_format"]), case["y"], rtol=1e-5, atol=1e-5)


def test_docstring_examples_run():
    result = doctest.testmod(keras, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3 and result.failed == 0
