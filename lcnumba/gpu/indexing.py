"""Index arithmetic of the CUDA kernels, written once as plain Python.

Nothing here imports Numba: ``lcnumba.gpu.launch.device_function`` compiles
these functions as inlined CUDA device functions, and the tests compile the
same source with ``numba.njit`` (and run it as plain Python) to check it
against brute force and against ``lcnumba.geometry``. Every value is an
integer; with Numba's default integer type (int64) no product of sizes
overflows even when a tensor has more than 2^31 elements.
"""


def tile_span(tile, size, tiles, periodic):
    """Output indices along one axis that use filter bank ``tile``: ``(start, step, count)``.

    ``periodic`` (Ngiam et al.): indices ``tile, tile + tiles, ...`` below
    ``size``. Block mode: the contiguous run of indices ``i`` with
    ``i * tiles // size == tile``. The indices are ``start + u * step`` for
    ``u < count``; ``count`` may be 0 (more tiles than positions).
    """
    if periodic:
        if tile >= size:
            return 0, 1, 0
        return tile, tiles, (size - tile + tiles - 1) // tiles
    start = (tile * size + tiles - 1) // tiles
    stop = ((tile + 1) * size + tiles - 1) // tiles
    return start, 1, stop - start


def tile_of(index, size, tiles, periodic):
    """Filter bank along one axis of output index ``index`` (the inverse of :func:`tile_span`)."""
    if periodic:
        return index % tiles
    return index * tiles // size


def span_count(size, tiles):
    """The largest ``count`` of :func:`tile_span` over the ``tiles`` banks of an axis (either mode)."""
    return (size + tiles - 1) // tiles


def tap_range(pos, pad, kernel, stride, dilation, out_size):
    """Kernel taps that read input index ``pos``: ``range(lo, hi, step)``.

    Output ``i`` reads input ``i * stride - pad + a * dilation`` with tap
    ``a``; so input ``pos`` is read by exactly the taps ``a`` in
    ``[0, kernel)`` with ``t = pos + pad - a * dilation`` divisible by
    ``stride`` and ``0 <= t / stride < out_size``. Those taps form an
    arithmetic progression of step ``stride / gcd(stride, dilation)``; this
    returns its exact bounds, so a gather loop visits no tap that
    contributes nothing. Output ``i = (pos + pad - a * dilation) // stride``.
    """
    t = pos + pad
    g, r = stride, dilation  # gcd(stride, dilation), inline: the functions here call nothing
    while r != 0:
        g, r = r, g % r
    step = stride // g
    if t < 0:
        return 0, 0, step
    first = -1
    for a in range(step):
        if (t - a * dilation) % stride == 0:
            first = a
            break
    if first < 0:
        return 0, 0, step
    hi = min(kernel, t // dilation + 1)
    low = t - (out_size - 1) * stride
    lo_bound = 0
    if low > 0:
        lo_bound = (low + dilation - 1) // dilation
    lo = first
    if lo_bound > first:
        lo = first + ((lo_bound - first + step - 1) // step) * step
    if lo > hi:
        lo = hi
    return lo, hi, step
