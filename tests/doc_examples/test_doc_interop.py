"""Examples of the Keras weights page (docs/interop.rst), on weights and outputs saved by tf-keras."""

from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "keras"


def test_keras_locally_connected():
    path = FIXTURES / "lc2d_impl2_same_cl.npz"
    # magictoken.keras_locally_connected.begin
    import numpy as np
    import lcnumba
    from lcnumba.interop import keras

    # tf-keras: LocallyConnected2D(2, (2, 2), strides=(2, 1), padding="same", implementation=2)
    # on 6 x 5 x 3 images; its layer.get_weights(), an input and the layer's output
    saved = np.load(path)                       # tests/fixtures/keras/lc2d_impl2_same_cl.npz
    r = keras.from_locally_connected2d(
        saved["kernel"], saved["bias"], input_shape=(6, 5, 3), kernel_size=(2, 2),
        strides=(2, 1), padding="same", data_format="channels_last", implementation=2)
    print(r.w.shape, r.b.shape)                 # (3, 5, 2, 3, 2, 2) (2, 3, 5): (OH, OW, F, C, KH, KW), (F, OH, OW)
    print(r.padding)                            # ((1, 0), (1, 0)): Keras centres even windows top/left

    x = np.moveaxis(saved["x"], -1, 1)          # channels_last -> (N, C, H, W)
    y = lcnumba.local_conv2d_forward(x, r.w, r.b, **r.kwargs)
    np.testing.assert_allclose(np.moveaxis(y, 1, -1), saved["y"], rtol=1e-5, atol=1e-5)

    # back to Keras 2, for layer.set_weights([kernel, bias]) on the same layer
    kernel, bias = keras.to_locally_connected2d(
        r.w, r.b, input_shape=(6, 5, 3), strides=(2, 1), padding="same", implementation=2)
    # magictoken.keras_locally_connected.end
    assert r.w.shape == (3, 5, 2, 3, 2, 2) and r.padding == ((1, 0), (1, 0))
    np.testing.assert_array_equal(bias, saved["bias"])
    assert kernel.shape == saved["kernel"].shape


def test_keras_conv2d():
    path = FIXTURES / "conv2d_same_stride2.npz"
    # magictoken.keras_conv2d.begin
    import numpy as np
    import lcnumba
    from lcnumba.interop import keras

    # tf-keras: Conv2D(4, (3, 2), strides=2, padding="same") on 6 x 5 x 3 images
    saved = np.load(path)                       # tests/fixtures/keras/conv2d_same_stride2.npz
    r = keras.from_conv2d(saved["kernel"], saved["bias"], input_shape=(6, 5, 3), strides=2, padding="same")
    print(r.w.shape, r.padding)                 # (4, 3, 3, 2) ((0, 1), (0, 1)): the extra cell bottom/right

    y = lcnumba.conv2d_forward(np.moveaxis(saved["x"], -1, 1), r.w, r.b, **r.kwargs)   # (2, 4, 3, 3)
    np.testing.assert_allclose(np.moveaxis(y, 1, -1), saved["y"], rtol=1e-5, atol=1e-5)
    # magictoken.keras_conv2d.end
    assert y.shape == (2, 4, 3, 3) and r.padding == ((0, 1), (0, 1))
