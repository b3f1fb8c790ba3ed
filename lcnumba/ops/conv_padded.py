"""The convolution family's passes with a padding mode other than zeros (reflect, replicate, circular).

PyTorch's ``nn.Conv2d(padding_mode=...)`` pads the whole input with
``F.pad`` and convolves the copy with padding 0. Here the batch is cut into
chunks: each chunk is padded into one scratch buffer (``backend.conv_pad``)
and the zero-padding kernels run on it with padding 0 (``plan.padded``), so
no copy of the input is larger than one padded chunk. The input gradient of
a chunk comes back padded and is folded onto the input cells
(``backend.conv_fold``): a reflected, replicated or wrapped cell's gradient
adds into the cell it copies (``docs/derivations/conv.md``).

The chunk size depends on the shapes only (``samples_per_chunk``), so every
sum (the weight gradient adds its chunks in batch order, through the
kernels' ``accumulate``) runs in an order the shapes fix: results are
bitwise identical for any thread count.

The callers (``lcnumba.ops.conv``) have checked every argument; arrays come
as the kernels' views (images (N, C, H, W), flat weights and biases) and
``plan`` is the call's, with ``plan.mode`` not zeros.
"""

from ..cpu import conv_padded as padded_kernels

#: Elements of the padded scratch buffer (``lcnumba.cpu.conv_padded.CHUNK_ELEMENTS``, which the C entry
#: points compile in: the same chunks, so the same sums). Tests patch it down.
CHUNK_ELEMENTS = padded_kernels.CHUNK_ELEMENTS


def samples_per_chunk(plan):
    """Samples padded at once: as many as ``CHUNK_ELEMENTS`` holds, at least 1, at most the batch."""
    g = plan.padded.geo
    return padded_kernels.samples_per_chunk(g.n, g.c, g.h, g.w, CHUNK_ELEMENTS)


def _chunks(plan):
    size = samples_per_chunk(plan)
    for n0 in range(0, plan.geo.n, size):
        yield n0, min(plan.geo.n, n0 + size)


def _pads(plan):
    g = plan.geo
    return (g.pad_top, g.pad_left, g.pad_bottom, g.pad_right)


def _scratch(be, plan, dtype):
    """The padded chunk buffer, ``(samples_per_chunk, C, H + PT + PB, W + PL + PR)``."""
    g = plan.padded.geo
    return be.output(None, "padded", (samples_per_chunk(plan), g.c, g.h, g.w), dtype, {})


def forward(be, plan, x, w, b, y):
    """``y = conv(pad(x), w) + b`` chunk by chunk."""
    scratch = _scratch(be, plan, x.dtype)
    for n0, n1 in _chunks(plan):
        xp = scratch[: n1 - n0]
        be.conv_pad(x[n0:n1], _pads(plan), plan.mode, xp)
        be.conv_forward(xp, w, b, plan.padded, y[n0:n1])


def backward_input(be, plan, dy, w, dx):
    """``dx = fold(conv^T(dy, w))`` chunk by chunk."""
    scratch = _scratch(be, plan, dy.dtype)
    for n0, n1 in _chunks(plan):
        _input_gradient(be, plan, dy[n0:n1], w, scratch[: n1 - n0], dx[n0:n1])


def _input_gradient(be, plan, dy, w, dxp, dx):
    be.conv_backward_input(dy, w, plan.padded, dxp)
    be.conv_fold(dxp, _pads(plan), plan.mode, dx)


def backward_weight(be, plan, dy, x, accumulate, dw):
    """``dw (+)= sum over chunks of dy^T pad(x)``, the chunks added in batch order."""
    scratch = _scratch(be, plan, x.dtype)
    for n0, n1 in _chunks(plan):
        xp = scratch[: n1 - n0]
        be.conv_pad(x[n0:n1], _pads(plan), plan.mode, xp)
        be.conv_backward_weight(dy[n0:n1], xp, plan.padded, accumulate or n0 > 0, dw)


def backward(be, plan, dy, x, w, dx, dw):
    """``dx`` and ``dw`` at once: each chunk is padded once, and its buffer then takes its padded ``dx``."""
    scratch = _scratch(be, plan, x.dtype)
    for n0, n1 in _chunks(plan):
        buffer = scratch[: n1 - n0]
        be.conv_pad(x[n0:n1], _pads(plan), plan.mode, buffer)
        be.conv_backward_weight(dy[n0:n1], buffer, plan.padded, n0 > 0, dw)
        _input_gradient(be, plan, dy[n0:n1], w, buffer, dx[n0:n1])
