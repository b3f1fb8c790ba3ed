"""Examples of the pages of each op family (docs/families/*.rst)."""

import numpy as np


def test_conv2d():
    # magictoken.conv2d.begin
    import numpy as np
    import lcnumba

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 32, 32), dtype=np.float32)
    w = lcnumba.he_normal((16, 3, 5, 5), seed=0)     # (F, C, KH, KW)
    b = np.zeros(16, np.float32)

    y = lcnumba.conv2d_forward(x, w, b, stride=1, padding="same")   # (8, 16, 32, 32)
    dy = np.ones_like(y)
    dx, dw, db = lcnumba.conv2d_backward(dy, x, w, b, padding="same")

    # grouped convolution: 4 groups of 4 filters, each seeing 2 of the 8 channels
    x8 = rng.standard_normal((8, 8, 16, 16), dtype=np.float32)
    wg = lcnumba.he_normal((16, 2, 3, 3), seed=1)    # (F, C / groups, KH, KW)
    yg = lcnumba.conv2d_forward(x8, wg, groups=4, padding=1, dilation=1)
    # magictoken.conv2d.end
    assert y.shape == (8, 16, 32, 32) and yg.shape == (8, 16, 16, 16)
    np.testing.assert_allclose(db, np.full(16, 8 * 32 * 32))
    from lcnumba import testing
    np.testing.assert_allclose(y, testing.conv2d_forward(x, w, b, padding="same"), rtol=1e-4, atol=1e-4)


def test_conv1d():
    # magictoken.conv1d.begin
    import numpy as np
    import lcnumba

    x = np.random.default_rng(0).standard_normal((4, 2, 50))           # (N, C, L)
    w = lcnumba.he_normal((3, 2, 7), "conv1d", dtype=np.float64, seed=0)  # (F, C, K)
    y = lcnumba.conv1d_forward(x, w, stride=2)                            # (4, 3, 22)
    wl = lcnumba.he_normal((22, 3, 2, 7), "local_conv1d", dtype=np.float64, seed=0)  # (OL, F, C, K)
    yl = lcnumba.local_conv1d_forward(x, wl, stride=2)                    # (4, 3, 22)
    # magictoken.conv1d.end
    assert y.shape == yl.shape == (4, 3, 22)


def test_tiled_conv2d():
    # magictoken.tiled_conv2d.begin
    import numpy as np
    import lcnumba

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 32, 32, 32), dtype=np.float32)
    w = lcnumba.he_normal((2, 2, 32, 32, 5, 5), "tiled_conv2d", seed=0)  # (TH, TW, F, C, KH, KW)
    b = np.zeros((32, 2, 2), np.float32)                                 # (F, TH, TW)

    # periodic (Ngiam et al.): output (i, j) uses bank (i % 2, j % 2)
    y = lcnumba.tiled_conv2d_forward(x, w, b, padding=2)                 # (8, 32, 32, 32)
    # block: the output is cut into 2x2 rectangles, one bank each
    y_block = lcnumba.tiled_conv2d_forward(x, w, b, padding=2, tile_mode="block")

    dy = np.ones_like(y)
    dx, dw, db = lcnumba.tiled_conv2d_backward(dy, x, w, b, padding=2)
    # every bank saw a quarter of the 32 x 32 positions of each of the 8 images
    np.testing.assert_allclose(db, np.full((32, 2, 2), 8 * 16 * 16))
    # magictoken.tiled_conv2d.end
    assert y.shape == y_block.shape == (8, 32, 32, 32)
    assert not np.allclose(y, y_block)


def test_local_conv2d():
    # magictoken.local_conv2d.begin
    import numpy as np
    import lcnumba

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 16, 55, 55), dtype=np.float32)          # DeepFace L5's input
    out_shape = lcnumba.local_conv2d_output_shape(x.shape, 7, 16, stride=2)  # (8, 16, 25, 25)
    oh, ow = out_shape[2:]
    w = lcnumba.he_normal((oh, ow, 16, 16, 7, 7), "local_conv2d", seed=0)  # (OH, OW, F, C, KH, KW)
    b = np.zeros((16, oh, ow), np.float32)                                 # (F, OH, OW)

    y = np.empty(out_shape, np.float32)
    lcnumba.local_conv2d_forward(x, w, b, stride=2, out=y)
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    dx = lcnumba.local_conv2d_backward_input(dy, w, x.shape, stride=2)
    dw = lcnumba.local_conv2d_backward_weight(dy, x, w.shape, stride=2)
    db = lcnumba.local_conv2d_backward_bias(dy, b.shape)
    # magictoken.local_conv2d.end
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == b.shape
    np.testing.assert_allclose(db, dy.sum(axis=0), rtol=1e-5, atol=1e-4)


def test_max_pool2d():
    # magictoken.max_pool2d.begin
    import numpy as np
    import lcnumba

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 32, 142, 142), dtype=np.float32)      # DeepFace M2's input
    y, indices = lcnumba.max_pool2d_forward(x, 3, stride=2, return_indices=True)  # (8, 32, 70, 70)

    # indices[n, c, i, j] is the flat index h * W + w of the chosen cell of plane (n, c)
    plane = x[0, 0].ravel()
    assert plane[indices[0, 0, 5, 7]] == y[0, 0, 5, 7]

    dy = np.ones_like(y)
    dx = lcnumba.max_pool2d_backward(dy, indices, x.shape)           # dy routed to the chosen cells
    # magictoken.max_pool2d.end
    assert y.shape == (8, 32, 70, 70)
    assert dx.sum() == y.size


def test_netvlad():
    # magictoken.netvlad.begin
    import numpy as np
    import lcnumba

    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_normal((8, 64, 12, 12), dtype=np.float32))  # (N, D, H, W) feature maps

    # k-means on the descriptors gives 16 centroids; two ghost clusters (GhostVLAD) are added
    w, b, centroids = lcnumba.netvlad_init(x, 16, num_ghost=2, seed=0)  # (18, 64), (18,), (16, 64)

    y = lcnumba.netvlad_forward(x, w, b, centroids)                      # (8, 16 * 64), unit rows
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    dx, dw, db, dcentroids = lcnumba.netvlad_backward(dy, x, w, b, centroids)
    # magictoken.netvlad.end
    assert y.shape == (8, 1024)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1, rtol=1e-5)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == b.shape
    assert dcentroids.shape == centroids.shape


def test_netvlad_options():
    # magictoken.netvlad_options.begin
    import numpy as np
    import lcnumba

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 32, 50)).astype(np.float32)  # (N, D, M): up to 50 frames per video
    lengths = np.array([50, 31, 12, 40])
    mask = np.arange(50) < lengths[:, None]                  # (N, M): True for a real frame
    x *= mask[:, None, :]                                    # padded frames are 0
    w, b, centroids = lcnumba.netvlad_init(x[:1], 8, seed=0)  # k-means on the first video's frames

    # padded frames get no assignment and no gradient; intra-normalisation switched off
    y = lcnumba.netvlad_forward(x, w, b, centroids, mask=mask, intra_normalize=False)       # (4, 8 * 32)
    dx, dw, db, dc = lcnumba.netvlad_backward(np.ones_like(y), x, w, b, centroids, mask=mask,
                                              intra_normalize=False)

    # the aggregation core for an assignment computed elsewhere (here: uniform over 8 clusters)
    assignment = np.full((4, 8, 50), 1 / 8, np.float32) * mask[:, None, :]
    v = lcnumba.vlad_aggregate_forward(x, assignment, centroids)                            # (4, 256)
    dx2, dassignment, dc2 = lcnumba.vlad_aggregate_backward(np.ones_like(v), x, assignment, centroids)

    # PCA-whitening to 3 dimensions (addPCA.m), then the layer and its gradients for fine-tuning
    projection, bias = lcnumba.netvlad_pca_fit(y, 3)                                        # (3, 256), (3,)
    z = lcnumba.netvlad_pca_forward(y, projection, bias)                                    # (4, 3), unit rows
    dy, dprojection, dbias = lcnumba.netvlad_pca_backward(np.ones_like(z), y, projection, bias)
    # magictoken.netvlad_options.end
    assert y.shape == (4, 256) and v.shape == (4, 256) and z.shape == (4, 3)
    assert not dx[1][:, 31:].any() and not dx[2][:, 12:].any()
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1, rtol=1e-5)
    assert dassignment.shape == assignment.shape and dprojection.shape == projection.shape


def test_initialisers():
    # magictoken.initialisers.begin
    import numpy as np
    import lcnumba

    # fans of one output position's bank: fan_in = C * KH * KW, fan_out = F * KH * KW
    assert lcnumba.fans((55, 55, 16, 16, 9, 9), "local_conv2d") == (16 * 81, 16 * 81)

    w_conv = lcnumba.he_normal((32, 3, 11, 11), "conv2d", seed=0)                   # std sqrt(2 / 363)
    w_tiled = lcnumba.glorot_uniform((2, 2, 32, 32, 5, 5), "tiled_conv2d", seed=0)
    w_local = lcnumba.he_uniform((21, 21, 16, 16, 5, 5), "local_conv2d", dtype=np.float64, seed=0)
    w_dense = lcnumba.glorot_normal((10, 128), "linear", seed=0)
    # magictoken.initialisers.end
    assert w_conv.dtype == np.float32 and w_local.dtype == np.float64
    assert w_tiled.shape == (2, 2, 32, 32, 5, 5) and w_dense.shape == (10, 128)


def test_gradcheck_own_layer():
    # magictoken.gradcheck.begin
    import numpy as np
    import lcnumba
    from lcnumba import testing

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 7))            # float64 for finite differences
    w = rng.standard_normal((5, 5, 4, 3, 3, 3))
    b = rng.standard_normal((4, 5, 5))

    # the kernels against the plain-NumPy reference ...
    np.testing.assert_allclose(lcnumba.local_conv2d_forward(x, w, b), testing.local_conv2d_forward(x, w, b))
    # ... and the backward against central differences of the forward
    testing.gradcheck(lcnumba.local_conv2d_forward, [x, w, b],
                      lambda dy, x, w, b: lcnumba.local_conv2d_backward(dy, x, w, b))
    # magictoken.gradcheck.end


def test_conv2d_transpose():
    # magictoken.conv2d_transpose.begin
    import numpy as np
    import lcnumba

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16, 8, 8))                 # (N, C, H, W)
    w = rng.standard_normal((16, 8, 4, 4))                 # (C, F/groups, KH, KW), PyTorch's layout
    b = np.zeros(8)
    # a DCGAN upsampling step: (8 - 1)*2 - 2*1 + (4 - 1) + 0 + 1 = 16
    y = lcnumba.conv2d_transpose_forward(x, w, b, stride=2, padding=1)
    assert y.shape == lcnumba.conv2d_transpose_output_shape(x.shape, w.shape, stride=2, padding=1) == (4, 8, 16, 16)

    # its input gradient is conv2d_forward, and its forward conv2d's input gradient
    dy = rng.standard_normal(y.shape)
    dx, dw, db = lcnumba.conv2d_transpose_backward(dy, x, w, b, stride=2, padding=1)
    np.testing.assert_allclose(dx, lcnumba.conv2d_forward(dy, w, stride=2, padding=1))
    np.testing.assert_allclose(y, lcnumba.conv2d_backward_input(x, w, y.shape, stride=2, padding=1))
    # output_padding picks the other input size that conv2d maps onto 8 x 8
    assert lcnumba.conv2d_transpose_forward(x, w, stride=2, padding=1, output_padding=1).shape == (4, 8, 17, 17)
    # magictoken.conv2d_transpose.end
    assert dw.shape == w.shape and db.shape == b.shape


def test_tiled_conv2d_transpose():
    # magictoken.tiled_conv2d_transpose.begin
    import numpy as np
    import lcnumba

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16, 8, 8))
    w = rng.standard_normal((2, 2, 16, 8, 3, 3))           # (TH, TW, C, F/groups, KH, KW): banks by input position
    b = np.zeros((8, 2, 2))                                # (F, TH, TW): tiles of the output positions
    y = lcnumba.tiled_conv2d_transpose_forward(x, w, b, stride=2, padding=1, output_padding=1)
    dy = np.ones_like(y)
    dx, dw, db = lcnumba.tiled_conv2d_transpose_backward(dy, x, w, b, stride=2, padding=1, output_padding=1)
    # the 16 x 16 output positions fall a quarter on each bias tile, for each of the 4 images
    np.testing.assert_allclose(db, np.full((8, 2, 2), 4 * 8 * 8))
    # magictoken.tiled_conv2d_transpose.end
    assert y.shape == (4, 8, 16, 16) and dx.shape == x.shape and dw.shape == w.shape


def test_local_conv2d_transpose():
    # magictoken.local_conv2d_transpose.begin
    import numpy as np
    import lcnumba

    # A decoder layer undoing a local_conv2d of 3x3 stride 2: (N, 16, 11, 11) -> (N, 8, 23, 23).
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16, 11, 11), dtype=np.float32)
    w = rng.standard_normal((11, 11, 16, 8, 3, 3), dtype=np.float32)  # (H, W, C, F, KH, KW): a bank per input cell
    out_shape = lcnumba.local_conv2d_transpose_output_shape(x.shape, w.shape, stride=2)  # (4, 8, 23, 23)
    b = np.zeros((8,) + out_shape[2:], np.float32)                    # (F, OH, OW): a bias per output cell

    y = lcnumba.local_conv2d_transpose_forward(x, w, b, stride=2)
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    dx = lcnumba.local_conv2d_transpose_backward_input(dy, w, x.shape, stride=2)
    dw = lcnumba.local_conv2d_transpose_backward_weight(dy, x, w.shape, stride=2)
    db = lcnumba.local_conv2d_transpose_backward_bias(dy, b.shape)
    # the same weight is the weight of local_conv2d from (4, 8, 23, 23) to (4, 16, 11, 11)
    np.testing.assert_allclose(dx, lcnumba.local_conv2d_forward(dy, w, stride=2), rtol=1e-5)
    # magictoken.local_conv2d_transpose.end
    assert y.shape == out_shape == (4, 8, 23, 23) and dw.shape == w.shape and db.shape == b.shape


def test_conv2d_padding_mode():
    # magictoken.conv2d_padding_mode.begin
    import numpy as np
    import lcnumba

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 16, 16))
    w = lcnumba.he_normal((8, 3, 3, 3), dtype=np.float64, seed=0)

    # as torch.nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect"): no dark border
    y = lcnumba.conv2d_forward(x, w, padding=1, padding_mode="reflect")          # (4, 8, 16, 16)
    # the same as padding a copy with np.pad and convolving it without padding
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    assert np.allclose(y, lcnumba.conv2d_forward(xp, w))

    # the gradients take the mode too; a reflected cell's gradient adds into the cell it mirrors
    dx, dw, _ = lcnumba.conv2d_backward(np.ones_like(y), x, w, padding=1, padding_mode="reflect")
    # magictoken.conv2d_padding_mode.end
    from lcnumba import testing
    np.testing.assert_allclose(dx, testing.conv2d_backward_input(np.ones_like(y), w, x.shape, padding=1,
                                                                 padding_mode="reflect"), rtol=1e-12)
    np.testing.assert_allclose(dw, testing.conv2d_backward_weight(np.ones_like(y), x, w.shape, padding=1,
                                                                  padding_mode="reflect"), rtol=1e-12)


def test_tiled_conv2d_padding_mode():
    # magictoken.tiled_conv2d_padding_mode.begin
    import numpy as np
    import lcnumba

    # a latitude-longitude grid (18 x 36 cells): wrap around in longitude, as Flax's circular padding
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 18, 36), dtype=np.float32)
    w = lcnumba.he_normal((3, 1, 8, 4, 3, 5), "tiled_conv2d", seed=0)   # a bank per band of latitude
    y = lcnumba.tiled_conv2d_forward(x, w, padding=((0, 0), (2, 2)), padding_mode="circular",
                                     tile_mode="block")                   # (2, 8, 16, 36)
    # magictoken.tiled_conv2d_padding_mode.end
    from lcnumba import testing
    assert y.shape == (2, 8, 16, 36)
    np.testing.assert_allclose(y, testing.tiled_conv2d_forward(x, w, padding=((0, 0), (2, 2)), padding_mode="circular",
                                                               tile_mode="block"), rtol=1e-4, atol=1e-4)


def test_local_conv2d_padding_mode():
    # magictoken.local_conv2d_padding_mode.begin
    import numpy as np
    import lcnumba

    x = np.random.default_rng(0).standard_normal((2, 3, 12, 12))
    shape = lcnumba.local_conv2d_output_shape(x.shape, (5, 5), 6, padding="same")   # (2, 6, 12, 12)
    w = lcnumba.he_normal((12, 12, 6, 3, 5, 5), "local_conv2d", dtype=np.float64, seed=0)
    # the edge cells repeated: every position's filters see a full 5x5 window of image values
    y = lcnumba.local_conv2d_forward(x, w, padding="same", padding_mode="replicate")
    dw = lcnumba.local_conv2d_backward_weight(np.ones_like(y), x, w.shape, padding="same",
                                              padding_mode="replicate")
    # magictoken.local_conv2d_padding_mode.end
    from lcnumba import testing
    assert y.shape == shape
    np.testing.assert_allclose(y, testing.local_conv2d_forward(x, w, padding="same", padding_mode="replicate"),
                               rtol=1e-12)
    np.testing.assert_allclose(dw, testing.local_conv2d_backward_weight(np.ones_like(y), x, w.shape, padding="same",
                                                                        padding_mode="replicate"), rtol=1e-12)
