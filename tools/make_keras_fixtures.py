"""Make the Keras fixtures of ``tests/test_interop_keras.py`` (``tests/fixtures/keras/*.npz``).

Run once, with TensorFlow and tf-keras (Keras 2) installed, from the repository root::

    python -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tf-keras
    /tmp/tfenv/bin/python tools/make_keras_fixtures.py

Each case builds one small Keras layer (``LocallyConnected2D`` / ``LocallyConnected1D``
with each implementation and data format, ``Conv2D`` / ``Conv1D`` with ``"same"`` padding
and even kernels), sets random weights (random biases too, and for implementation 2
random values outside the connectivity mask, which Keras must ignore), runs it on a
random input and saves, float32, in ``<case>.npz``:

``x``, ``kernel``, ``bias``, ``y`` (Keras's output, in the layer's data format), the
layer's parameters (``layer``, ``kernel_size``, ``strides``, ``padding``, ``data_format``,
``implementation``, ``dilation_rate``, ``groups``) and ``made_with`` (the TensorFlow and
tf-keras versions). The tests need neither TensorFlow nor this script.
"""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "keras"

#: name: (layer, input_shape without batch, filters, kernel_size, strides, padding, data_format, implementation,
#:        dilation_rate, groups)
CASES = {}
for fmt, tag in (("channels_last", "cl"), ("channels_first", "cf")):
    shape2 = (6, 5, 3) if fmt == "channels_last" else (3, 6, 5)
    shape1 = (7, 3) if fmt == "channels_last" else (3, 7)
    for impl in (1, 2, 3):
        CASES[f"lc2d_impl{impl}_valid_{tag}"] = ("LocallyConnected2D", shape2, 2, (3, 2), (1, 2), "valid", fmt, impl,
                                                 1, 1)
        CASES[f"lc1d_impl{impl}_valid_{tag}"] = ("LocallyConnected1D", shape1, 2, (3,), (2,), "valid", fmt, impl, 1, 1)
    for impl in (2, 3):
        # even kernels: Keras's locally connected "same" puts the extra cell top/left
        CASES[f"lc2d_impl{impl}_same_{tag}"] = ("LocallyConnected2D", shape2, 2, (2, 2), (2, 1), "same", fmt, impl,
                                                1, 1)
        CASES[f"lc1d_impl{impl}_same_{tag}"] = ("LocallyConnected1D", shape1, 2, (4,), (3,), "same", fmt, impl, 1, 1)
# Conv on the CPU runs channels_last only; its kernel does not depend on the data format
CASES["conv2d_same_even"] = ("Conv2D", (6, 5, 3), 4, (2, 2), (1, 1), "same", "channels_last", 0, (1, 1), 1)
CASES["conv2d_same_stride2"] = ("Conv2D", (6, 5, 3), 4, (3, 2), (2, 2), "same", "channels_last", 0, (1, 1), 1)
CASES["conv2d_same_dilated"] = ("Conv2D", (6, 5, 4), 4, (2, 3), (1, 1), "same", "channels_last", 0, (2, 1), 2)
CASES["conv1d_same_stride2"] = ("Conv1D", (8, 3), 4, (4,), (2,), "same", "channels_last", 0, (1,), 1)
CASES["conv1d_causal"] = ("Conv1D", (8, 3), 4, (3,), (1,), "causal", "channels_last", 0, (2,), 1)


def build(layer, input_shape, filters, kernel_size, strides, padding, data_format, implementation, dilation, groups):
    cls = getattr(tf_keras.layers, layer)
    if layer.startswith("Locally"):
        return cls(filters, kernel_size, strides=strides, padding=padding, data_format=data_format,
                   implementation=implementation)
    return cls(filters, kernel_size, strides=strides, padding=padding, data_format=data_format,
               dilation_rate=dilation, groups=groups)


def make(name, case, rng):
    layer_name, input_shape, *_ = case
    layer = build(*case)
    layer.build((None,) + input_shape)
    kernel, bias = (w.numpy() for w in layer.weights)
    kernel = rng.standard_normal(kernel.shape).astype(np.float32)
    bias = rng.standard_normal(bias.shape).astype(np.float32)
    layer.set_weights([kernel, bias])
    x = rng.standard_normal((2,) + input_shape).astype(np.float32)
    y = layer(tf.constant(x)).numpy()
    (_, _, _, kernel_size, strides, padding, data_format, implementation, dilation, groups) = case
    np.savez_compressed(
        OUT / f"{name}.npz", x=x, kernel=kernel, bias=bias, y=y, layer=layer_name, input_shape=input_shape,
        kernel_size=kernel_size, strides=strides, padding=padding, data_format=data_format,
        implementation=implementation, dilation_rate=dilation, groups=groups,
        made_with=f"tensorflow {tf.__version__}, tf-keras {tf_keras.__version__}")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261207)
    for name, case in CASES.items():
        make(name, case, rng)
        print(name, (OUT / f"{name}.npz").stat().st_size, "bytes")


if __name__ == "__main__":
    main()
