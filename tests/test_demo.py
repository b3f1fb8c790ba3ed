"""``python -m lcnumba demo``: short runs on both data sets, the curves, micro-batches, the missing extra."""

import re
import subprocess
import sys

import numpy as np
import pytest

import lcnumba
import lcnumba.__main__ as cli

for _module in ("sklearn", "skimage", "matplotlib"):
    pytest.importorskip(_module, reason="the demo extra is not installed: pip install -e '.[demo]'")

from lcnumba import demo  # noqa: E402


def _accuracy(output):
    return float(re.search(r"^test accuracy ([0-9.]+) ", output, re.M).group(1))


def test_digits_one_epoch_with_plot(tmp_path, capsys):
    png = tmp_path / "curves.png"
    assert cli.main(["demo", "--epochs", "1", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^epoch   1/1  loss [0-9.]+  train acc [0-9.]+  test acc [0-9.]+ +[0-9.]+ s", out, re.M)
    assert _accuracy(out) >= 0.85
    for family in demo.FAMILIES:
        assert re.search(rf"^  {re.escape(family)} +[0-9.]+ +[0-9.]+ +\d+$", out, re.M), family
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"training curves saved to {png}" in out


def test_faces_few_epochs(capsys):
    assert demo.main(["--dataset", "faces", "--epochs", "4"]) == 0
    out = capsys.readouterr().out
    assert "150 training and 50 test images of 25x25, 2 classes" in out
    assert _accuracy(out) >= 0.8


def test_micro_batches_give_the_gradients_of_the_whole_batch():
    x, y, _, _, names = demo.load("digits", 0)
    x, y = x[:16], y[:16]
    grads = []
    for micro in (16, 4):
        net = demo.Network(demo.CONFIGS["digits"], x.shape[1:], len(names), micro, seed=3)
        net.init_netvlad(x, demo.Timer())
        net.zero_grads()
        loss, correct = net.train_batch(x, y, demo.Timer())
        grads.append((loss, correct, net.grads))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    assert grads[0][1] == grads[1][1]
    for name, whole in grads[0][2].items():
        np.testing.assert_allclose(grads[1][2][name], whole, rtol=1e-4, atol=1e-6, err_msg=name)


def test_datasets_are_split_and_standardised():
    for name, classes, size in (("digits", 10, 8), ("faces", 2, 25)):
        x_train, y_train, x_test, y_test, names = demo.load(name, 0)
        assert len(names) == classes and x_train.dtype == np.float32
        assert x_train.shape[1:] == (1, size, size)
        assert len(x_test) == pytest.approx(0.25 * (len(x_train) + len(x_test)), abs=1)
        assert set(np.unique(y_test)) == set(range(classes))
        assert abs(x_train.mean()) < 1e-5 and abs(x_train.std() - 1) < 1e-4
        again = demo.load(name, 0)
        np.testing.assert_array_equal(again[0], x_train)


def test_bad_arguments(capsys):
    assert demo.main(["--batch-size", "32", "--micro-batches", "3"]) == 2
    assert "--micro-batches" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        demo.main(["--dataset", "cifar"])


def test_without_the_demo_extra_the_command_names_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now raises ImportError
    monkeypatch.delitem(sys.modules, "lcnumba.demo", raising=False)
    monkeypatch.delattr(lcnumba, "demo", raising=False)
    assert cli.main(["demo"]) == 1
    assert "lcnumba[demo]" in capsys.readouterr().err


def test_help_from_the_command_line():
    result = subprocess.run([sys.executable, "-m", "lcnumba", "demo", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0
    assert "--dataset" in result.stdout and "--plot" in result.stdout
