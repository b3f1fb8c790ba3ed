"""Examples of docs/concepts.rst: the spectrum of weight sharing and DeepFace's L4-L6."""

import numpy as np


def test_deepface_parameter_counts():
    # magictoken.deepface_counts.begin
    import lcnumba

    layers = {  # name: (input shape, kernel, stride)
        "L4": ((1, 16, 63, 63), 9, 1),
        "L5": ((1, 16, 55, 55), 7, 2),
        "L6": ((1, 16, 25, 25), 5, 1),
    }
    counts = {}
    for name, (shape, k, stride) in layers.items():
        _, f, oh, ow = lcnumba.local_conv2d_output_shape(shape, k, 16, stride=stride)
        bank = f * shape[1] * k * k                  # one (F, C, KH, KW) filter bank
        counts[name] = {
            "output": (f, oh, ow),
            "conv2d": bank,                          # one bank for every position
            "tiled_conv2d 2x2": 4 * bank,            # one bank per tile
            "local_conv2d": oh * ow * bank,          # one bank per output position
        }
    # magictoken.deepface_counts.end
    assert counts["L4"] == {"output": (16, 55, 55), "conv2d": 20736, "tiled_conv2d 2x2": 82944,
                            "local_conv2d": 62_726_400}
    assert counts["L5"] == {"output": (16, 25, 25), "conv2d": 12544, "tiled_conv2d 2x2": 50176,
                            "local_conv2d": 7_840_000}
    assert counts["L6"] == {"output": (16, 21, 21), "conv2d": 6400, "tiled_conv2d 2x2": 25600,
                            "local_conv2d": 2_822_400}


def test_spectrum():
    # magictoken.spectrum.begin
    import numpy as np
    import lcnumba

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 9, 9))
    bank = rng.standard_normal((4, 3, 3, 3))         # (F, C, KH, KW)
    y = lcnumba.conv2d_forward(x, bank)              # (2, 4, 7, 7)

    # tiled with a 1x1 tile: one bank for every position, i.e. conv2d
    one_tile = bank[None, None]                      # (1, 1, F, C, KH, KW)
    np.testing.assert_allclose(lcnumba.tiled_conv2d_forward(x, one_tile), y)

    # local with the same bank at every position: conv2d again
    everywhere = np.broadcast_to(bank, (7, 7) + bank.shape)   # (OH, OW, F, C, KH, KW)
    np.testing.assert_allclose(lcnumba.local_conv2d_forward(x, everywhere), y)

    # tiled with a tile per output position is local_conv2d
    banks = rng.standard_normal((7, 7, 4, 3, 3, 3))
    np.testing.assert_allclose(lcnumba.tiled_conv2d_forward(x, banks),
                               lcnumba.local_conv2d_forward(x, banks))
    # magictoken.spectrum.end
