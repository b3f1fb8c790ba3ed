"""Compiled twins of plain drivers: the same code, calling compiled drivers instead of plain ones.

A plain driver (``host_forward``, ...) chooses its kernels in Python and
calls other plain drivers by module-level names, so that a first call from
Python compiles only the kernels it runs. The C entry points need the same
driver compiled, calling the compiled drivers: ``compiled_twin`` makes it
from the driver's own code object (``twin``), in a copy of its module's
namespace where those names are the compiled drivers. Its on-disk cache is
the driver's (same file, name and line), keyed as its module keys its
kernels (``lcnumba.cache.key_kernels``). The C entry points' cores
(``lcnumba.capi.cores``) make their transposed forms with ``twin`` too.
"""

import sys
import types

from numba import njit

from . import conv


def twin(function, name=None, **bound):
    """A copy of ``function`` (its code object) that sees the module-level names ``bound`` as given.

    Parameters
    ----------
    function : function
        A function of a package module.
    name : str, optional
        The copy's name and qualified name (Numba's on-disk cache tells functions apart by them);
        ``function``'s by default.
    **bound
        ``name=value``: the module-level names the copy sees as those values.

    Returns
    -------
    function
    """
    namespace = dict(vars(sys.modules[function.__module__]), **bound)
    copy = types.FunctionType(function.__code__, namespace, name or function.__name__, function.__defaults__,
                              function.__closure__)
    copy.__qualname__ = name or function.__qualname__
    copy.__module__, copy.__doc__ = function.__module__, function.__doc__
    return copy


def compiled_twin(driver, **compiled):
    """``njit(cache=True)`` of the plain ``driver`` with the names ``compiled`` bound to compiled drivers.

    Parameters
    ----------
    driver : function
        A plain driver of a ``lcnumba.cpu`` module.
    **compiled
        ``name=dispatcher``: the module-level names the twin sees as those dispatchers.

    Returns
    -------
    numba.core.registry.CPUDispatcher
    """
    return njit(cache=True)(twin(driver, **compiled))


def over_conv_drivers(*drivers):
    """Compiled twins of plain drivers that call the convolution drivers of ``lcnumba.cpu.conv`` as
    ``_forward``, ``_backward_input`` and ``_backward_weight``: those names bound to the compiled ones."""
    return tuple(compiled_twin(driver, _forward=conv.forward, _backward_input=conv.backward_input,
                               _backward_weight=conv.backward_weight) for driver in drivers)
