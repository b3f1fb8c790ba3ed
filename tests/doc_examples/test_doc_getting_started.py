"""Examples of docs/getting_started.rst; each block between magictoken markers is shown in the page."""

import numpy as np


def test_first_layer():
    # magictoken.first_layer.begin
    import numpy as np
    import lcnumba

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 16, 25, 25), dtype=np.float32)          # (N, C, H, W)
    n, f, oh, ow = lcnumba.local_conv2d_output_shape(x.shape, 5, 16)    # 5x5 kernels, 16 filters
    w = lcnumba.he_normal((oh, ow, f, 16, 5, 5), "local_conv2d", seed=0)  # one bank per position
    b = np.zeros((f, oh, ow), dtype=np.float32)

    y = lcnumba.local_conv2d_forward(x, w, b)        # (8, 16, 21, 21)
    dy = y - 1.0                                     # gradient of 0.5 * ||y - 1||^2
    dx, dw, db = lcnumba.local_conv2d_backward(dy, x, w, b)
    w -= 0.01 * dw                                   # one SGD step
    b -= 0.01 * db
    # magictoken.first_layer.end
    assert y.shape == (8, 16, 21, 21)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == b.shape


def test_out_buffers():
    import lcnumba

    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 12, 12), dtype=np.float32)
    w = lcnumba.he_normal((8, 3, 3, 3), seed=1)
    b = np.zeros(8, np.float32)
    # magictoken.out_buffers.begin
    y = np.empty(lcnumba.conv2d_output_shape(x.shape, w.shape, padding=1), dtype=x.dtype)
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)

    for step in range(3):                            # no allocation inside the loop
        lcnumba.conv2d_forward(x, w, b, padding=1, out=y)
        dy = y                                       # gradient of 0.5 * ||y||^2
        lcnumba.conv2d_backward_input(dy, w, x.shape, padding=1, out=dx)
        lcnumba.conv2d_backward_weight(dy, x, w.shape, padding=1, out=dw)
        lcnumba.conv2d_backward_bias(dy, b.shape, out=db)
        w -= 0.01 * dw
        b -= 0.01 * db
    # magictoken.out_buffers.end
    assert lcnumba.conv2d_forward(x, w, b, padding=1, out=y) is y


def test_accumulate():
    import lcnumba

    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 3, 10, 10))
    w = lcnumba.he_normal((2, 2, 4, 3, 3, 3), "tiled_conv2d", dtype=np.float64, seed=2)
    dy = rng.standard_normal(lcnumba.tiled_conv2d_output_shape(x.shape, w.shape))
    # magictoken.accumulate.begin
    dw = np.empty_like(w)
    for i, part in enumerate(np.split(np.arange(len(x)), 4)):   # four micro-batches of 2
        lcnumba.tiled_conv2d_backward_weight(dy[part], x[part], w.shape, out=dw,
                                             accumulate=i > 0)  # overwrite, then add
    # dw now holds the gradient of the whole batch
    np.testing.assert_allclose(dw, lcnumba.tiled_conv2d_backward_weight(dy, x, w.shape))
    # magictoken.accumulate.end


def test_errors():
    import pytest

    import lcnumba

    x = np.ones((2, 3, 8, 8), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    b = np.zeros(4, np.float32)
    messages = []
    print = messages.append
    # magictoken.errors.begin
    try:
        lcnumba.conv2d_forward(x, w.astype(np.float64), b)
    except TypeError as error:
        print(error)   # w: expected dtype float32 like x and b, got dtype float64
    try:
        lcnumba.conv2d_forward(x, w, stride=0)
    except ValueError as error:
        print(error)   # stride: expected ints >= 1, got (0, 0)
    # magictoken.errors.end
    assert [str(m) for m in messages] == [
        "w: expected dtype float32 like x and b, got dtype float64",
        "stride: expected ints >= 1, got (0, 0)",
    ]
    with pytest.raises(ValueError, match="out"):
        lcnumba.conv2d_forward(x, w, out=np.empty((2, 4, 5, 5), np.float32))
