"""Index arithmetic of every op, written once as plain Python.

Nothing here imports Numba. The same source runs three ways:
``lcnumba.cpu.indexing`` compiles it with ``numba.njit(inline="always")``
for the CPU kernels and the C entry points, ``lcnumba.gpu`` with
``cuda.jit(device=True)`` (inlined) for the CUDA kernels, and
``lcnumba.geometry`` calls it as Python to size outputs. So an output size,
a tile or a tap bound cannot differ between the Python layer, the C entry
points and the kernels on either device.

Every value is an integer; with Numba's default integer type (int64) no
product of sizes overflows even when a tensor has more than 2^31 elements.
The functions call nothing (not even ``math.gcd``): each compiles alone as
a device function.

Along one axis, output ``i`` of a window of ``kernel`` taps reads the input
cells ``i * stride - pad + a * dilation`` for taps ``a < kernel``.
"""


def kernel_extent(kernel, dilation):
    """Input cells a dilated window spans: ``dilation * (kernel - 1) + 1``."""
    return dilation * (kernel - 1) + 1


def conv_output_size(size, kernel, stride, dilation, pad_before, pad_after):
    """Windows along an axis of the convolution family: ``floor((size + pads - extent) / stride) + 1``.

    The result is below 1 when the dilated kernel is larger than the padded input.
    """
    return (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


def conv_transpose_output_size(size, kernel, stride, dilation, pad_before, pad_after, output_padding):
    """Positions along an axis of a transposed convolution (PyTorch's ``conv_transpose2d``).

    ``(size - 1) * stride - pads + dilation * (kernel - 1) + output_padding + 1``: the input size
    of the forward op that maps back onto ``size`` positions (for ``output_padding < stride``).
    The result is below 1 when the padding exceeds what the dilated kernel and ``output_padding`` add.
    """
    return (size - 1) * stride - pad_before - pad_after + dilation * (kernel - 1) + output_padding + 1

def pool_output_size(size, kernel, stride, pad, dilation, ceil_mode):
    """Windows along an axis of max-pooling, PyTorch's rule (``pad`` on both sides).

    ``floor((size + 2 pad - extent) / stride) + 1``, or with ``ceil_mode``
    rounded up instead, less a last window that would start in the right
    padding (it would cover padding and no input cell it does not share
    with the window before). The result is below 1 when the dilated kernel
    is larger than the padded input.
    """
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return span // stride + 1
    out = (span + stride - 1) // stride + 1
    if (out - 1) * stride >= size + pad:
        out -= 1
    return out


def tile_of(index, size, tiles, periodic):
    """Filter bank along one axis of output index ``index`` (of ``size``) with ``tiles`` banks.

    ``periodic`` (Ngiam et al.): ``index % tiles``. Block mode:
    ``index * tiles // size``, contiguous runs of indices in bank order.
    """
    if periodic:
        return index % tiles
    return index * tiles // size


def tile_span(tile, size, tiles, periodic):
    """Output indices along one axis that use filter bank ``tile``: ``(start, step, count)``.

    ``periodic``: indices ``tile, tile + tiles, ...`` below ``size``. Block
    mode: the contiguous run of indices ``i`` with ``i * tiles // size ==
    tile``. The indices are ``start + u * step`` for ``u < count``; ``count``
    may be 0 (more tiles than positions). The inverse of :func:`tile_of`.
    """
    if periodic:
        if tile >= size:
            return 0, 1, 0
        return tile, tiles, (size - tile + tiles - 1) // tiles
    start = (tile * size + tiles - 1) // tiles
    stop = ((tile + 1) * size + tiles - 1) // tiles
    return start, 1, stop - start


def span_count(size, tiles):
    """The largest ``count`` of :func:`tile_span` over the ``tiles`` banks of an axis (either mode)."""
    return (size + tiles - 1) // tiles


def taps_inside(start, step, count, size):
    """The terms ``m`` in ``[lo, hi)`` of ``start + m * step`` (``m < count``) that lie in ``[0, size)``.

    With ``start`` a window's first cell (``i * stride - pad``) and ``step``
    its dilation, these are the taps of output ``i`` that read the input
    rather than the padding; with ``start`` the cell one tap reads for the
    first of a run of output positions and ``step`` the run's stride in the
    input, the positions of the run for which that tap reads the input.
    ``step >= 1``; an empty range comes as ``lo == hi``.
    """
    lo = 0
    if start < 0:
        lo = (-start + step - 1) // step
    hi = 0
    if size - 1 - start >= 0:
        hi = (size - 1 - start) // step + 1
    if hi > count:
        hi = count
    if lo > hi:
        lo = hi
    return lo, hi


def tap_range(pos, pad, kernel, stride, dilation, out_size):
    """The windows that contain input cell ``pos``, as the taps that read it: ``range(lo, hi, step)``.

    Input ``pos`` is read by exactly the taps ``a`` in ``[0, kernel)`` with
    ``t = pos + pad - a * dilation`` divisible by ``stride`` and
    ``0 <= t / stride < out_size``; tap ``a`` belongs to output (window)
    ``i = (pos + pad - a * dilation) // stride``. Those taps form an
    arithmetic progression of step ``stride / gcd(stride, dilation)``; this
    returns its exact bounds, so a gather loop visits no tap that
    contributes nothing.
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


# ---------------------------------------------------------------- padding modes
#
# ``mode`` is an index into ``lcnumba.table.PADDING_MODES``: 0 zeros, 1 reflect,
# 2 replicate, 3 circular. Along one axis of ``size`` cells with ``before``
# cells of padding in front, padded index ``p`` stands for input cell
# ``t = p - before``; the padded input is PyTorch's ``F.pad(x, mode)``. The
# callers guarantee PyTorch's bounds (reflect: ``before, after < size``;
# circular: ``before, after <= size``; replicate: ``size >= 1``), so no cell
# is reflected or wrapped twice.


def pad_source(p, size, before, mode):
    """The input cell that padded index ``p`` copies, or -1 for a zero (``mode`` 0 outside the input).

    Reflect mirrors about the edge cells without repeating them (``x2 x1 | x0 x1 x2``), replicate
    repeats the edge cell (``x0 x0 | x0 x1``), circular wraps around (``x1 x2 | x0 x1 x2``).
    """
    t = p - before
    if t >= 0 and t < size:
        return t
    if mode == 1:
        if t < 0:
            return -t
        return 2 * (size - 1) - t
    if mode == 2:
        if t < 0:
            return 0
        return size - 1
    if mode == 3:
        if t < 0:
            return t + size
        return t - size
    return -1


def fold_runs(s, size, before, after, mode):
    """The padded indices that copy input cell ``s``, as two runs around ``s + before``: the inverse of
    :func:`pad_source`.

    Returns ``(lo, lo_count, hi, hi_count)``: the ``lo_count`` indices ``lo, lo + 1, ...`` in the front
    padding and the ``hi_count`` indices ``hi, hi + 1, ...`` in the back padding that copy ``s``
    (besides ``s + before`` itself). Reflect and circular give at most one of each, replicate the whole
    front padding to cell 0 and the whole back padding to cell ``size - 1``.
    """
    lo, lo_count, hi, hi_count = 0, 0, 0, 0
    if mode == 1:
        if s >= 1 and s <= before:
            lo, lo_count = before - s, 1
        if s >= size - 1 - after and s <= size - 2:
            hi, hi_count = before + 2 * size - 2 - s, 1
    elif mode == 2:
        if s == 0:
            lo, lo_count = 0, before
        if s == size - 1:
            hi, hi_count = before + size, after
    elif mode == 3:
        if s >= size - before:
            lo, lo_count = s - size + before, 1
        if s < after:
            hi, hi_count = before + size + s, 1
    return lo, lo_count, hi, hi_count


def fold_index(r, s, before, lo, lo_count, hi):
    """The ``r``-th padded index that copies cell ``s``, in increasing order, for ``r < lo_count + 1 + hi_count``
    (the runs of :func:`fold_runs`): the front run, then ``s + before``, then the back run."""
    if r < lo_count:
        return lo + r
    if r == lo_count:
        return s + before
    return hi + r - lo_count - 1
