"""Gradient checks: analytic vector-Jacobian products against float64 central differences.

Elementwise like ``torch.autograd.gradcheck`` for small inputs, along random
directions like ``jax.test_util.check_grads`` for large ones.
"""

import numpy as np

__all__ = ["gradcheck"]

_ELEMENTWISE_LIMIT = 1024
_DEFAULT_DIRECTIONS = 8


def gradcheck(func, inputs, analytic, *, wrt=None, eps=1e-6, rtol=1e-5, atol=1e-7, directions=None, seed=0,
              names=None):
    """Check analytic gradients against float64 central differences.

    The scalar that is differentiated is ``L = <func(*inputs), dy>`` for a
    fixed random ``dy`` of the output's shape, so ``analytic`` is exercised
    as a vector-Jacobian product, exactly as a backward pass is called.

    Parameters
    ----------
    func : callable
        ``func(*inputs) -> y``, an ndarray of any shape.
    inputs : sequence
        The arguments of ``func``. The checked ones must be float64 ndarrays;
        the others (None, ints, shapes) are passed through untouched. The
        caller's arrays are never modified: perturbations go to copies.
    analytic : callable
        ``analytic(dy, *inputs) -> sequence`` with one gradient per input,
        each of its input's shape; entries of unchecked inputs may be None.
    wrt : sequence of int, optional
        Indices of the inputs to check; by default every ndarray input.
    eps : float
        Finite-difference step.
    rtol, atol : float
        A derivative passes when ``|numeric - analytic| <= atol + rtol * |analytic|``.
    directions : None, "all" or int
        ``"all"``: every element is perturbed in turn (two evaluations of
        ``func`` per element, as ``torch.autograd.gradcheck``). An int ``k``:
        ``k`` random unit directions ``v`` per input, each comparing
        ``(L(x + eps v) - L(x - eps v)) / (2 eps)`` with ``<g, v>`` (as
        ``jax.test_util.check_grads``), for inputs too large to perturb one
        element at a time. None: ``"all"`` for inputs of at most 1024
        elements, 8 directions for larger ones.
    seed : int
        Seed of ``dy`` and of the directions.
    names : sequence of str, optional
        Names of the inputs, for the failure message.

    Returns
    -------
    bool
        True (a failure raises).

    Raises
    ------
    TypeError
        A checked input that is not a float64 ndarray (float32 differences
        at any useful ``eps`` are dominated by rounding).
    ValueError
        An analytic gradient missing or of the wrong shape.
    AssertionError
        A derivative outside the tolerance; the message names the input, the
        worst element or direction, and both values.

    Notes
    -----
    For the linear and bilinear ops of the convolution family the central
    difference has no truncation error, so the only error is rounding,
    about ``1e-16 * sum|y * dy| / eps``; ``atol`` must cover it for large outputs.
    """
    args = list(inputs)
    if wrt is None:
        wrt = [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]
    wrt = list(wrt)
    names = list(names) if names is not None else [f"inputs[{i}]" for i in range(len(args))]
    for i in wrt:
        if not isinstance(args[i], np.ndarray) or args[i].dtype != np.float64:
            raise TypeError(f"{names[i]}: expected a float64 numpy.ndarray to check, got {type(args[i]).__name__}"
                            f"{'' if not isinstance(args[i], np.ndarray) else ' of dtype ' + str(args[i].dtype)}")
        args[i] = np.array(args[i], dtype=np.float64, order="C", copy=True)

    rng = np.random.default_rng(seed)
    y = np.asarray(func(*args), dtype=np.float64)
    dy = rng.standard_normal(y.shape)

    def loss():
        return float(np.dot(np.asarray(func(*args), dtype=np.float64).ravel(), dy.ravel()))

    grads = list(analytic(dy.copy(), *[a.copy() if isinstance(a, np.ndarray) else a for a in args]))
    for i in wrt:
        if i >= len(grads) or grads[i] is None:
            raise ValueError(f"{names[i]}: analytic returned no gradient")
        grads[i] = np.asarray(grads[i], dtype=np.float64)
        if grads[i].shape != args[i].shape:
            raise ValueError(f"{names[i]}: expected a gradient of shape {args[i].shape}, got {grads[i].shape}")

    for i in wrt:
        x, g = args[i], grads[i]
        mode = directions
        if mode is None:
            mode = "all" if x.size <= _ELEMENTWISE_LIMIT else _DEFAULT_DIRECTIONS
        if isinstance(mode, str):
            if mode != "all":
                raise ValueError(f'directions: expected None, "all" or an int >= 1, got {mode!r}')
            _check_elementwise(loss, x, g, eps, rtol, atol, names[i])
        else:
            if isinstance(mode, bool) or not isinstance(mode, (int, np.integer)) or mode < 1:
                raise ValueError(f'directions: expected None, "all" or an int >= 1, got {mode!r}')
            _check_directions(loss, x, g, eps, rtol, atol, names[i], int(mode), rng)
    return True


def _check_elementwise(loss, x, g, eps, rtol, atol, name):
    flat = x.reshape(-1)  # a view: perturbing it perturbs the argument func sees
    numeric = np.empty(flat.size)
    for k in range(flat.size):
        original = flat[k]
        flat[k] = original + eps
        plus = loss()
        flat[k] = original - eps
        minus = loss()
        flat[k] = original
        numeric[k] = (plus - minus) / (2 * eps)
    expected = g.reshape(-1)
    error = np.abs(numeric - expected)
    bad = error > atol + rtol * np.abs(expected)
    if bad.any():
        worst = int(np.argmax(np.where(bad, error, -1.0)))
        index = np.unravel_index(worst, x.shape)
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {flat.size} derivatives outside atol={atol}, rtol={rtol}; "
            f"worst at {tuple(int(v) for v in index)}: numeric {float(numeric[worst])!r}, "
            f"analytic {float(expected[worst])!r}"
        )


def _check_directions(loss, x, g, eps, rtol, atol, name, count, rng):
    original = x.copy()
    for d in range(count):
        v = rng.standard_normal(x.shape)
        norm = np.linalg.norm(v)
        v = v / norm if norm > 0 else v
        x[...] = original + eps * v
        plus = loss()
        x[...] = original - eps * v
        minus = loss()
        x[...] = original
        numeric = (plus - minus) / (2 * eps)
        expected = float(np.dot(g.ravel(), v.ravel()))
        if abs(numeric - expected) > atol + rtol * abs(expected):
            raise AssertionError(
                f"{name}: directional derivative {d} of {count} outside atol={atol}, rtol={rtol}: "
                f"numeric {numeric!r}, analytic {expected!r}"
            )
