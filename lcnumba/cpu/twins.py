"""Compiled twins of plain drivers: the same code, calling compiled drivers instead of plain ones.

A plain driver (``host_forward``, ...) chooses its kernels in Python and
calls other plain drivers by module-level names, so that a first call from
Python compiles only the kernels it runs. The C entry points need the same
driver compiled, calling the compiled drivers: ``compiled_twin`` makes it
from the driver's own code object, in a copy of its module's namespace where
those names are the compiled drivers. Its on-disk cache is the driver's
(same file, name and line), keyed as its module keys its kernels
(``lcnumba.cache.key_kernels``).
"""

import sys
import types

from numba import njit

from . import conv


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
    namespace = dict(vars(sys.modules[driver.__module__]), **compiled)
    twin = types.FunctionType(driver.__code__, namespace, driver.__name__, driver.__defaults__, driver.__closure__)
    twin.__qualname__, twin.__module__, twin.__doc__ = driver.__qualname__, driver.__module__, driver.__doc__
    return njit(cache=True)(twin)


def over_conv_drivers(*drivers):
    """Compiled twins of plain drivers that call the convolution drivers of ``lcnumba.cpu.conv`` as
    ``_forward``, ``_backward_input`` and ``_backward_weight``: those names bound to the compiled ones."""
    return tuple(compiled_twin(driver, _forward=conv.forward, _backward_input=conv.backward_input,
                               _backward_weight=conv.backward_weight) for driver in drivers)
