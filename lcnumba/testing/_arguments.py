"""Argument handling shared by the references: integer parameters, ranks, shapes and dtypes.

Written here rather than taken from ``lcnumba.checks`` or ``lcnumba.geometry``
so that the references normalise their parameters on their own: a mistake in
the library's normalisation then shows up as a disagreement instead of being
repeated by the reference. The messages follow the library's form,
``"<name>: expected ..., got ..."``.
"""

import operator

import numpy as np


def ints(value, name, length, minimum):
    """An int or a sequence of ``length`` ints, as a tuple of ``length`` Python ints >= ``minimum``.

    Any integer type is accepted (``operator.index``); floats are refused.
    """
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,) * length
    if len(items) != length:
        raise ValueError(f"{name}: expected an int or {length} ints, got {value!r}")
    try:
        items = tuple(operator.index(item) for item in items)
    except TypeError:
        raise TypeError(f"{name}: expected an int or {length} ints, got {value!r}") from None
    if min(items) < minimum:
        raise ValueError(f"{name}: expected ints >= {minimum}, got {value!r}")
    return items


def require_ndim(array, name, ndim):
    """``array`` as an ndarray of rank ``ndim``."""
    array = np.asarray(array)
    if array.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {array.shape}")
    return array


def require_shape(actual, expected, name, why=""):
    """``ValueError`` unless ``actual == expected`` (both shapes)."""
    if tuple(actual) != tuple(expected):
        suffix = f" ({why})" if why else ""
        raise ValueError(f"{name}: expected shape {tuple(expected)}{suffix}, got shape {tuple(actual)}")


def float_result_dtype(*arrays):
    """The dtype of a result computed from ``arrays`` (None entries skipped): float32 or float64."""
    dtype = np.result_type(*[a.dtype for a in arrays if a is not None])
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"arrays: expected float32 or float64 arrays, got dtype {dtype}")
    return dtype
