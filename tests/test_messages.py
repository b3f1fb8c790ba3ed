"""Error messages show what the caller passed (DESIGN section 3).

A 1-D function reports 1-D shapes, never the 2-D view it runs on; a dtype
mix names the array that differs from the others; a NetVLAD call whose x and
w disagree on D names both with their shapes; checks run in signature order.
"""

import re

import numpy as np
import pytest

import lcnumba

from families import FAMILIES

ONE_D = [fam for fam in FAMILIES if fam.spatial == 1]


def _weights(fam, rng, n=2, c=4, length=9, f=3, k=3):
    ol = length - k + 1
    lead = {"shared": (), "tiled": (2,), "local": (ol,)}[fam.sharing]
    x = rng.standard_normal((n, c, length))
    w = rng.standard_normal(lead + (f, c, k))
    b = rng.standard_normal((f,) + lead)
    return x, w, b, (n, f, ol)


def _four_d_shapes(text):
    return re.findall(r"\(\d+, \d+, \d+, \d+\)", text)


@pytest.mark.parametrize("fam", ONE_D, ids=str)
def test_one_d_out_shape_is_reported_in_one_d(fam):
    x, w, b, y_shape = _weights(fam, np.random.default_rng(0))
    bad = np.empty(y_shape[:2] + (y_shape[2] + 1,))
    with pytest.raises(ValueError) as info:
        fam.op("forward")(x, w, b, out=bad, **fam.mode)
    message = str(info.value)
    assert message.startswith("out: expected shape ")
    assert str(y_shape) in message and str(bad.shape) in message
    assert not _four_d_shapes(message), message


@pytest.mark.parametrize("fam", ONE_D, ids=str)
def test_one_d_bias_shape_is_reported_in_one_d(fam):
    x, w, b, _ = _weights(fam, np.random.default_rng(0))
    bad = np.concatenate([b, b], axis=-1) if b.ndim > 1 else np.concatenate([b, b])
    with pytest.raises(ValueError) as info:
        fam.op("forward")(x, w, bad, **fam.mode)
    message = str(info.value)
    assert message.startswith("b: expected shape "), message
    assert str(b.shape) in message and str(bad.shape) in message
    assert not re.search(r"\(\d+, 1, \d+\)", message), message  # the 2-D view (F, 1, T) of a 1-D bias


@pytest.mark.parametrize("fam", ONE_D, ids=str)
def test_one_d_weight_and_dy_shapes_are_reported_in_one_d(fam):
    x, w, b, y_shape = _weights(fam, np.random.default_rng(0))
    dy = np.zeros(y_shape[:2] + (y_shape[2] + 2,))
    with pytest.raises(ValueError) as info:
        fam.op("backward_input")(dy, w, x.shape, **fam.mode)
    assert str(info.value).startswith("dy: expected shape ")
    assert not _four_d_shapes(str(info.value)), str(info.value)
    with pytest.raises(ValueError) as info:
        fam.op("forward")(x, np.zeros(w.shape[:-1] + (20,)), **fam.mode)  # a kernel longer than the input
    assert not _four_d_shapes(str(info.value)), str(info.value)


def test_one_d_pooling_reports_one_d_parameters():
    x = np.zeros((2, 3, 10))
    with pytest.raises(ValueError) as info:
        lcnumba.max_pool1d_forward(x, 2, padding=2)
    assert str(info.value) == "padding: expected at most half the kernel size, 1 for kernel_size 2, got 2"
    with pytest.raises(ValueError) as info:
        lcnumba.max_pool1d_forward(x, 7, dilation=2)
    assert str(info.value) == ("kernel_size: expected a dilated kernel no larger than the padded input (10), "
                               "got a dilated kernel of 13")


@pytest.mark.parametrize("odd", ["x", "w", "b"])
def test_dtype_mix_names_the_odd_one_out(odd):
    rng = np.random.default_rng(0)
    arrays = {"x": rng.standard_normal((1, 2, 5, 5)), "w": rng.standard_normal((3, 2, 3, 3)),
              "b": rng.standard_normal(3)}
    arrays[odd] = arrays[odd].astype(np.float32)
    others = [name for name in arrays if name != odd]
    with pytest.raises(TypeError) as info:
        lcnumba.conv2d_forward(arrays["x"], arrays["w"], arrays["b"])
    assert str(info.value) == (f"{odd}: expected dtype float64 like {others[0]} and {others[1]}, "
                               f"got dtype float32")


def test_dtype_mix_without_a_majority_lists_every_array():
    dy = np.zeros((1, 3, 3, 3))
    w = np.zeros((3, 2, 3, 3), np.float32)
    with pytest.raises(TypeError) as info:
        lcnumba.conv2d_backward_input(dy, w, (1, 2, 5, 5))
    assert str(info.value) == ("w: expected one dtype (float32 or float64) for every array of the call, "
                               "got dtypes dy float64, w float32")


def test_netvlad_descriptor_size_mismatch_names_x_and_w():
    x = np.zeros((2, 5, 6))
    w = np.zeros((3, 4))
    with pytest.raises(ValueError) as info:
        lcnumba.netvlad_forward(x, w, np.zeros(3), np.zeros((2, 4)))
    message = str(info.value)
    assert message.startswith("w: ")
    assert "x (shape (2, 5, 6))" in message and "shape (3, 4)" in message, message


def test_checks_run_in_signature_order():
    # dy is checked before out: both are wrong, dy is named.
    w = np.zeros((3, 2, 3, 3))
    with pytest.raises(ValueError, match="^dy: "):
        lcnumba.conv2d_backward_input(np.zeros((1, 3, 4, 4)), w, (1, 2, 5, 5), out=np.zeros((9,)))
    with pytest.raises(ValueError, match="^out: "):
        lcnumba.conv2d_backward_input(np.zeros((1, 3, 3, 3)), w, (1, 2, 5, 5), out=np.zeros((9,)))
