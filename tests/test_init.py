"""He and Glorot initialisers: fans per layout, variance, shapes, dtypes, determinism, errors."""

import numpy as np
import pytest

import lcnumba
from lcnumba import init

# (family, weight shape, expected fan_in, expected fan_out)
LAYOUTS = [
    ("conv2d", (32, 3, 11, 11), 3 * 121, 32 * 121),                     # DeepFace C1
    ("conv2d", (8, 2, 3, 5), 2 * 15, 8 * 15),                           # groups: Cg = 2
    ("tiled_conv2d", (2, 2, 32, 32, 5, 5), 32 * 25, 32 * 25),           # tiled_k2
    ("local_conv2d", (55, 55, 16, 16, 9, 9), 16 * 81, 16 * 81),         # DeepFace L4
    ("local_conv2d", (21, 21, 16, 4, 5, 5), 4 * 25, 16 * 25),
    ("conv1d", (6, 4, 7), 4 * 7, 6 * 7),
    ("tiled_conv1d", (3, 6, 4, 7), 4 * 7, 6 * 7),
    ("local_conv1d", (10, 6, 4, 7), 4 * 7, 6 * 7),
    ("linear", (10, 128), 128, 10),
]
INITIALISERS = {
    # name: (function, variance from (fan_in, fan_out))
    "he_normal": (lcnumba.he_normal, lambda fi, fo: 2.0 / fi),
    "he_uniform": (lcnumba.he_uniform, lambda fi, fo: 2.0 / fi),
    "glorot_normal": (lcnumba.glorot_normal, lambda fi, fo: 2.0 / (fi + fo)),
    "glorot_uniform": (lcnumba.glorot_uniform, lambda fi, fo: 2.0 / (fi + fo)),
}


@pytest.mark.parametrize("family, shape, fan_in, fan_out", LAYOUTS)
def test_fans(family, shape, fan_in, fan_out):
    assert lcnumba.fans(shape, family) == (fan_in, fan_out)


def test_fans_of_tiled_and_local_are_those_of_one_bank():
    bank = (16, 8, 5, 5)
    assert lcnumba.fans((3, 4) + bank, "tiled_conv2d") == lcnumba.fans(bank, "conv2d")
    assert lcnumba.fans((21, 21) + bank, "local_conv2d") == lcnumba.fans(bank, "conv2d")
    assert lcnumba.fans((7,) + bank[:3], "local_conv1d") == lcnumba.fans(bank[:3], "conv1d")


@pytest.mark.parametrize("name", sorted(INITIALISERS))
@pytest.mark.parametrize("family, shape, fan_in, fan_out", [LAYOUTS[0], LAYOUTS[3], LAYOUTS[4], LAYOUTS[7]])
def test_variance_matches_the_formula(name, family, shape, fan_in, fan_out):
    function, variance = INITIALISERS[name]
    w = function(shape, family, dtype=np.float64, seed=1)
    n = w.size
    expected = variance(fan_in, fan_out)
    # the sample variance of n draws has relative standard deviation sqrt(2 / n) (normal)
    # or sqrt(0.8 / n) (uniform); allow 6 of them
    assert abs(w.var() / expected - 1) < 6 * np.sqrt(2.0 / n)
    assert abs(w.mean()) < 6 * np.sqrt(expected / n)


@pytest.mark.parametrize("name", ["he_uniform", "glorot_uniform"])
def test_uniform_bounds(name):
    function, variance = INITIALISERS[name]
    fan_in, fan_out = lcnumba.fans((64, 32, 3, 3), "conv2d")
    w = function((64, 32, 3, 3), seed=0, dtype=np.float64)
    limit = np.sqrt(3 * variance(fan_in, fan_out))  # U(-a, a) has variance a^2 / 3
    assert np.abs(w).max() <= limit
    assert np.abs(w).max() > 0.99 * limit


@pytest.mark.parametrize("name", ["he_normal", "glorot_normal"])
def test_normal_is_gaussian(name):
    w = INITIALISERS[name][0]((64, 64, 5, 5), seed=3, dtype=np.float64).ravel()
    z = w / w.std()
    # kurtosis 3 and a normal tail fraction (a uniform would give 1.8 and no tail)
    assert abs(np.mean(z ** 4) - 3.0) < 0.15
    assert 0.04 < np.mean(np.abs(z) > 2) < 0.052


@pytest.mark.parametrize("name", sorted(INITIALISERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64, "float32", np.dtype("float64")])
def test_shape_dtype_layout(name, dtype):
    shape = (5, 4, 8, 3, 3, 3)
    w = INITIALISERS[name][0](shape, "local_conv2d", dtype=dtype, seed=0)
    assert w.shape == shape
    assert w.dtype == np.dtype(dtype)
    assert w.flags.c_contiguous and w.flags.writeable


@pytest.mark.parametrize("name", sorted(INITIALISERS))
def test_default_dtype_is_float32_and_works_with_the_ops(name):
    x = np.ones((2, 3, 6, 6), np.float32)
    w = INITIALISERS[name][0]((4, 4, 5, 3, 3, 3), "local_conv2d", seed=0)
    assert w.dtype == np.float32
    assert lcnumba.local_conv2d_forward(x, w).shape == (2, 5, 4, 4)


@pytest.mark.parametrize("name", sorted(INITIALISERS))
def test_determinism(name):
    function = INITIALISERS[name][0]
    a = function((2, 2, 8, 4, 3, 3), "tiled_conv2d", seed=7)
    b = function((2, 2, 8, 4, 3, 3), "tiled_conv2d", seed=7)
    c = function((2, 2, 8, 4, 3, 3), "tiled_conv2d", seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # float64 and float32 draws of one seed are the same numbers, rounded
    np.testing.assert_array_equal(function((8, 4, 3, 3), seed=7, dtype=np.float64).astype(np.float32),
                                  function((8, 4, 3, 3), seed=7))


def test_without_seed_draws_differ():
    assert not np.array_equal(lcnumba.he_normal((8, 4, 3, 3)), lcnumba.he_normal((8, 4, 3, 3)))


def test_exported_from_init_module():
    for name in ("he_normal", "he_uniform", "glorot_normal", "glorot_uniform", "fans", "netvlad_init"):
        assert getattr(lcnumba, name) is getattr(init, name)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(weight_shape=(8, 4, 3, 3), family="dense"), ValueError, "family"),
    (dict(weight_shape=(8, 4, 3, 3), family=3), TypeError, "family"),
    (dict(weight_shape=(8, 4, 3, 3), family="local_conv2d"), ValueError, "weight_shape"),
    (dict(weight_shape=(2, 2, 8, 4, 3, 3), family="conv2d"), ValueError, "weight_shape"),
    (dict(weight_shape=(8, 0, 3, 3)), ValueError, "weight_shape"),
    (dict(weight_shape=(8, 4, 3.0, 3)), TypeError, "weight_shape"),
    (dict(weight_shape=8), TypeError, "weight_shape"),
    (dict(weight_shape=(8, 4, 3, 3), dtype=np.int32), TypeError, "dtype"),
    (dict(weight_shape=(8, 4, 3, 3), dtype=np.float16), TypeError, "dtype"),
    (dict(weight_shape=(8, 4, 3, 3), dtype="not a dtype"), TypeError, "dtype"),
    (dict(weight_shape=(8, 4, 3, 3), dtype=None), TypeError, "dtype"),
    (dict(weight_shape=(8, 4, 3, 3), seed=-1), ValueError, "seed"),
    (dict(weight_shape=(8, 4, 3, 3), seed=1.5), TypeError, "seed"),
])
@pytest.mark.parametrize("name", sorted(INITIALISERS))
def test_errors_name_the_argument(name, kwargs, error, match):
    with pytest.raises(error, match=match):
        INITIALISERS[name][0](**kwargs)


@pytest.mark.parametrize("name", sorted(INITIALISERS) + ["fans"])
def test_documented_parameters_match_the_signature(name):
    import inspect

    docscrape = pytest.importorskip("numpydoc.docscrape", reason="the docs extra is not installed")
    function = getattr(lcnumba, name)
    documented = [p.name for p in docscrape.FunctionDoc(function)["Parameters"]]
    assert documented == list(inspect.signature(function).parameters)
