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
