"""Example of docs/frameworks.md: a DeepFace-style network trained in an ordinary PyTorch loop.

Needs the ``torch`` and ``demo`` extras (PyTorch, scikit-learn's digits); skipped without them.
"""

import pytest


def test_deepface_style_network_in_pytorch():
    pytest.importorskip("torch", reason="the torch extra is not installed: pip install -e '.[torch]'")
    pytest.importorskip("sklearn", reason="the demo extra is not installed: pip install -e '.[demo]'")
    # magictoken.torch_digits.begin
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from torch.utils.data import DataLoader, TensorDataset

    import lcnumba.torch as lt

    torch.manual_seed(0)
    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32)[:, None]  # (N, 1, 8, 8)
    labels = torch.tensor(digits.target)
    x_train, x_test, y_train, y_test = train_test_split(images, labels, test_size=0.25, random_state=0)
    train = DataLoader(TensorDataset(x_train, y_train), batch_size=32, shuffle=True)

    # Shared convolution and pooling first, then unshared layers, as in DeepFace; a NetVLAD head.
    features = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),            # (16, 8, 8)
        torch.nn.MaxPool2d(2),                                            # (16, 4, 4)
        lt.LocallyConnected2d(16, 16, 3, input_size=(4, 4), padding=1),  # a filter bank per position
        torch.nn.ReLU(),
        lt.TiledConv2d(16, 16, 3, tiles=(2, 2), padding=1),              # 2 x 2 filter banks
        torch.nn.ReLU(),
    )
    vlad = lt.NetVLAD(num_clusters=8, dim=16, num_ghost=1)
    with torch.no_grad():
        vlad.init_from(features(x_train[:256]))                           # k-means on sample features
    model = torch.nn.Sequential(features, vlad, torch.nn.Linear(8 * 16, 10))

    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(3):
        for x, y in train:
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()                                               # lcnumba's backward passes
            optimiser.step()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(dim=1) == y_test).float().mean().item()
    print(f"test accuracy {accuracy:.3f}")
    # magictoken.torch_digits.end
    assert accuracy > 0.9


def test_jax_functions_under_jit_grad_and_vmap():
    pytest.importorskip("jax", reason="the jax extra is not installed: pip install -e '.[jax]'")
    # magictoken.jax_grad.begin
    import jax
    import jax.numpy as jnp
    import numpy as np

    import lcnumba
    import lcnumba.jax as lj

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 16, 12, 12), dtype=np.float32)                 # (N, C, H, W)
    w = lcnumba.he_normal((10, 10, 16, 16, 3, 3), "local_conv2d", seed=0)      # a bank per output position
    b = np.zeros((16, 10, 10), np.float32)

    def loss(w, b, x):
        return jnp.mean(jax.nn.relu(lj.local_conv2d(x, w, b)) ** 2)

    grad_w, grad_b = jax.jit(jax.grad(loss, argnums=(0, 1)))(w, b, x)         # lcnumba's backward pass
    per_example = jax.vmap(jax.grad(loss), in_axes=(None, None, 0))(w, b, x[:, None])  # (8, 10, 10, 16, 16, 3, 3)
    # magictoken.jax_grad.end
    np.testing.assert_allclose(np.asarray(per_example).mean(axis=0), np.asarray(grad_w), rtol=1e-4, atol=1e-6)
    assert grad_b.shape == b.shape


def test_transposed_layers_in_pytorch():
    pytest.importorskip("torch", reason="the torch extra is not installed: pip install -e '.[torch]'")
    # magictoken.torch_transposed.begin
    import torch

    import lcnumba.torch.functional as LF

    torch.manual_seed(0)
    z = torch.randn(4, 8, 3, 3, requires_grad=True)                          # (N, C, H, W) codes
    w_up = (0.2 * torch.randn(8, 4, 3, 3)).requires_grad_()                  # (C, F/groups, KH, KW), as PyTorch's
    w_local = (0.2 * torch.randn(6, 6, 4, 1, 3, 3)).requires_grad_()         # a bank per *input* position
    h = LF.conv_transpose2d(z, w_up, stride=2, padding=1, output_padding=1)  # (4, 4, 6, 6)
    y = LF.local_conv_transpose2d(torch.relu(h), w_local, padding=1)         # (4, 1, 6, 6): unshared decoder layer
    y.square().mean().backward()                                             # lcnumba's transposed backward passes
    # magictoken.torch_transposed.end
    reference = torch.nn.functional.conv_transpose2d(z, w_up, stride=2, padding=1, output_padding=1)
    torch.testing.assert_close(h, reference)
    assert y.shape == (4, 1, 6, 6) and z.grad.shape == z.shape and w_local.grad.shape == w_local.shape


def test_masked_netvlad_in_pytorch():
    pytest.importorskip("torch", reason="the torch extra is not installed: pip install -e '.[torch]'")
    # magictoken.torch_masked_netvlad.begin
    import torch

    import lcnumba.torch as lt

    torch.manual_seed(0)
    frames = torch.randn(3, 16, 10)                 # (N, D, M): three clips, padded to 10 frame descriptors
    lengths = torch.tensor([10, 4, 7])
    mask = torch.arange(10) < lengths[:, None]      # (N, M): the frames each clip really has
    vlad = lt.NetVLAD(num_clusters=4, dim=16, intra_normalize=True, final_normalize=True)
    v = vlad(frames, mask=mask)                     # (3, 64): the padding frames take no part
    # magictoken.torch_masked_netvlad.end
    torch.testing.assert_close(v[1], vlad(frames[1:2, :, :4])[0])  # as the clip without its padding
    assert v.shape == (3, 64)


def test_jax_transposed_and_masked_netvlad():
    pytest.importorskip("jax", reason="the jax extra is not installed: pip install -e '.[jax]'")
    # magictoken.jax_transposed.begin
    import jax
    import jax.numpy as jnp
    import numpy as np

    import lcnumba.jax as lj

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 5, 5), dtype=np.float32)              # (N, C, H, W)
    w = 0.1 * rng.standard_normal((5, 5, 4, 2, 3, 3), dtype=np.float32)  # a bank per input position
    mask = np.arange(144) < np.array([[144], [100]])                     # valid descriptors of each sample
    assign_w, assign_b = rng.standard_normal((3, 2), dtype=np.float32), np.zeros(3, np.float32)
    centroids = rng.standard_normal((3, 2), dtype=np.float32)

    def loss(w, x):
        h = lj.local_conv_transpose2d(x, w, stride=2, output_padding=1)  # (2, 2, 12, 12)
        v = lj.netvlad(h.reshape(2, 2, 144), assign_w, assign_b, centroids, mask=mask, intra_normalize=False)
        return jnp.sum(v[:, :3])                                          # a unit vector's first entries

    grad_w = jax.jit(jax.grad(loss))(w, x)                                # lcnumba's backward passes
    # magictoken.jax_transposed.end
    assert grad_w.shape == w.shape and np.isfinite(np.asarray(grad_w)).all()
