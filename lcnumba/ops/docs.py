"""Docstrings of the public functions, built from templates and the op table.

The convolution family's 30 docstrings (and the transposed family's 30) differ only in a few phrases per
family (the formula, what the weight and bias hold) and in the shapes, which
come from the table's dimension names; pooling and NetVLAD have one text per
function. ``docstring(fam, part)`` returns the numpydoc text of one public
function.
"""

# ---------------------------------------------------------------- per-family phrases of the convolution family

_TAPS_2D = "x[n, c, i*SH - PT + a*DH, j*SW - PL + b*DW]"
_TAPS_1D = "x[n, c, l*S - P + k*D]"

_PHRASES = {
    # family: (forward title, forward formula, w says, b says, y says, dw formula, db formula)
    "conv2d": (
        "Shared 2-D convolution (cross-correlation, as in PyTorch)",
        "y = b[f] + sum_{c,a,b} w[f, c, a, b] x[n, g*Cg + c, i*SH - PT + a*DH, j*SW - PL + b*DW]",
        "One filter bank shared by every output position.",
        "One bias per filter.",
        "``OH = floor((H + pad_top + pad_bottom - DH*(KH-1) - 1) / SH) + 1``, likewise OW.",
        f"``dw[f, c, a, b] = sum_{{n,i,j}} dy[n, f, i, j] {_TAPS_2D}``.",
        ": ``db[f] = sum_{n,i,j} dy[n, f, i, j]``",
    ),
    "tiled_conv2d": (
        "Tiled 2-D convolution (Ngiam et al. 2010)",
        f"y = b[f, ti, tj] + sum w[ti, tj, f, c, a, b] {_TAPS_2D}",
        'TH x TW filter banks; output (i, j) uses bank (ti, tj) = (i % TH, j % TW) in ``"periodic"`` mode,\n'
        '(i * TH // OH, j * TW // OW) in ``"block"`` mode.',
        "One bias per filter and tile.",
        "Output size as for :func:`conv2d_forward`.",
        "``dw[ti, tj]`` sums the conv2d weight gradient over the output positions that use tile ``(ti, tj)``.",
        ": ``db[f, ti, tj]`` sums ``dy[:, f]`` over the positions of tile ``(ti, tj)``",
    ),
    "local_conv2d": (
        "Locally connected (unshared) 2-D convolution, as in DeepFace",
        f"y = b[f, i, j] + sum w[i, j, f, c, a, b] {_TAPS_2D}",
        "A filter bank per output position; (OH, OW) must be the output size\n"
        "(see :func:`lcnumba.geometry.local_conv2d_output_shape`).",
        "One bias per filter and output position.",
        "Output size as for :func:`conv2d_forward`.",
        f"``dw[i, j, f, c, a, b] = sum_n dy[n, f, i, j] {_TAPS_2D}``.",
        ": ``db[f, i, j] = sum_n dy[n, f, i, j]``",
    ),
    "conv1d": (
        "Shared 1-D convolution",
        f"y = b[f] + sum_{{c,k}} w[f, c, k] {_TAPS_1D}",
        "One filter bank shared by every output position.",
        "One bias per filter.",
        "``OL = floor((L + pad_left + pad_right - D*(K-1) - 1) / S) + 1``.",
        f"``dw[f, c, k] = sum_{{n,l}} dy[n, f, l] {_TAPS_1D}``.",
        ": ``db[f] = sum_{n,l} dy[n, f, l]``",
    ),
    "tiled_conv1d": (
        "Tiled 1-D convolution",
        f"y = b[f, t] + sum w[t, f, c, k] {_TAPS_1D}",
        'T filter banks; output l uses bank l % T (``"periodic"``) or l * T // OL (``"block"``).',
        "One bias per filter and tile.",
        "Output size as for :func:`conv1d_forward`.",
        "``dw[t]`` sums the conv1d weight gradient over the positions that use tile ``t``.",
        ": ``db[f, t]`` sums ``dy[:, f]`` over the positions of tile ``t``",
    ),
    "local_conv1d": (
        "Locally connected (unshared) 1-D convolution",
        f"y = b[f, l] + sum w[l, f, c, k] {_TAPS_1D}",
        "A filter bank per output position; OL must be the output length.",
        "One bias per filter and position.",
        "Output size as for :func:`conv1d_forward`.",
        f"``dw[l, f, c, k] = sum_n dy[n, f, l] {_TAPS_1D}``.",
        ": ``db[f, l] = sum_n dy[n, f, l]``",
    ),
}

_SPATIAL = {
    # spatial rank: (x shape, y shape, stride/dilation spelling, padding spelling, "same" side)
    2: ("(N, C, H, W)", "(N, F, OH, OW)", "int or (SH, SW)",
        'int, (SH, SW), ((top, bottom), (left, right)), "valid" or "same"', "bottom/right"),
    1: ("(N, C, L)", "(N, F, OL)", "int or 1-tuple", 'int, 1-tuple, (left, right), "valid" or "same"', "right"),
}

_RAISES = """
    Raises
    ------
    TypeError
        Wrong array type, dtype mix, or NumPy and CUDA arrays mixed.
    ValueError
        Wrong shapes or parameters; ``out`` of the wrong shape, not contiguous or overlapping an input."""

_STREAM = """
    stream : int
        CUDA stream ({where})."""

_ACCUMULATE_LONG = """
    accumulate : bool
        Add into ``out`` instead of overwriting it (cuDNN's beta = 1), for
        gradient accumulation over micro-batches; needs ``out``."""

# The forward's arrays, as both forward templates (ordinary and transposed) list them.
_FORWARD_ARRAYS = '''    Parameters
    ----------
    x : ndarray, shape {x}
        Input, float32 or float64.
    w : ndarray, shape {w}
{w_says}
    b : ndarray, shape {b}, optional
        {b_says}'''

_TEMPLATES = {
    "forward": '''{title} forward: ``{formula}``.

''' + _FORWARD_ARRAYS + '''
    stride, dilation : {stride}
        Step between output positions and between kernel taps.
    padding : {padding}
        Cells added around the input (what they hold: ``padding_mode``); ``"same"`` needs stride 1 and
        puts an odd extra cell {same}.
    groups : int
        Channels split into groups as in PyTorch: filter ``f`` sees the channels of group ``f // (F/groups)``.
    padding_mode : {{"zeros", "reflect", "replicate", "circular"}}
        What the padding holds, as PyTorch's ``nn.Conv2d(padding_mode=...)``: zeros; the input mirrored
        about its edge cells (``x2 x1 | x0 x1 x2``, padding smaller than the input size); the edge cells
        repeated; or the input wrapped around (padding at most the input size). The gradients fold back
        onto the cells the padding copies.{tile_param}
    out : ndarray, shape {y}, optional
        C-contiguous buffer of the input dtype to write into; returned.{stream_cuda}

    Returns
    -------
    y : ndarray, shape {y}
        {y_says}
{raises}
''',
    "backward_input": '''Gradient of :func:`{name}_forward` with respect to ``x``: {dx_formula}.

    {dx_says}

    Parameters
    ----------
    dy : ndarray, shape {y}
        Gradient of the loss with respect to ``y``.
    w : ndarray, shape {w}
    input_shape : tuple of ints
        Shape of ``x``, {x}.
    {geometry_list}{tile_list}
        As given to the forward.
    out : ndarray, shape {x}, optional
        Buffer to write ``dx`` into; returned.{stream}

    Returns
    -------
    dx : ndarray, shape {x}
''',
    "backward_weight": '''Gradient of :func:`{name}_forward` with respect to ``w``.

    {dw_formula}

    Parameters
    ----------
    dy : ndarray, shape {y}
    x : ndarray, shape {x}
    weight_shape : tuple of ints
        Shape of ``w``, {w}.
    {geometry_list}{tile_list}
        As given to the forward.
    out : ndarray, shape {w}, optional
        Buffer for ``dw``; returned.{accumulate_long}{stream}

    Returns
    -------
    dw : ndarray, shape {w}
''',
    "backward_bias": '''Gradient of :func:`{name}_forward` with respect to ``b``{db_formula}.

    Parameters
    ----------
    dy : ndarray, shape {y}
    bias_shape : tuple of ints
        Shape of ``b``, {b}.{tile_given}
    out : ndarray, shape {b}, optional
        Buffer for ``db``; returned.
    accumulate : bool
        Add into ``out`` instead of overwriting it; needs ``out``.{stream}

    Returns
    -------
    db : ndarray, shape {b}
''',
    "backward": '''All gradients of :func:`{name}_forward` at once.

    Parameters
    ----------
    dy : ndarray, shape {y}
    x : ndarray, shape {x}
    w : ndarray, shape {w}
    b : ndarray, shape {b}, optional
        Only its shape is used; ``db`` is None when ``b`` is None.
    {geometry_list}{tile_list}
        As given to the forward.{stream}

    Returns
    -------
    dx : ndarray, shape {x}
    dw : ndarray, shape {w}
    db : ndarray, shape {b}, or None
''',
}


def _conv_docstring(fam, part):
    title, formula, w_says, b_says, y_says, dw_formula, db_formula = _PHRASES[fam.name]
    x, y, stride, padding, same = _SPATIAL[fam.spatial]
    tiled = fam.has_tiles
    fields = dict(
        name=fam.name, title=title, formula=formula, x=x, y=y, stride=stride, padding=padding, same=same,
        w=fam.layout(fam.weight_dims), b=fam.layout(fam.bias_dims),
        w_says="\n".join("        " + line for line in w_says.split("\n")), b_says=b_says, y_says=y_says,
        dw_formula=dw_formula, db_formula=db_formula, geometry_list="stride, padding, dilation, groups, padding_mode",
        dx_formula=f"``dx = {fam.name}_forward^T(dy)``",
        dx_says="Each input element gathers the output positions that read it; see\n    ``docs/derivations/conv.md``.",
        **_tile_fields(tiled),
        accumulate_long=_ACCUMULATE_LONG,
        stream=_STREAM.format(where="ignored on the CPU"),
        stream_cuda=_STREAM.format(where="CUDA arrays only; ignored on the CPU"),
        raises=_RAISES,
    )
    return _TEMPLATES[part].format(**fields)


# ---------------------------------------------------------------- the transposed convolution family

_SCATTER_2D = "y[n, g*Fg + f, i*SH - PT + a*DH, j*SW - PL + b*DW] += {w} x[n, c, i, j]"
_SCATTER_1D = "y[n, g*Fg + f, l*S - P + k*D] += {w} x[n, c, l]"

_TRANSPOSE_PHRASES = {
    # family: (title, scatter formula, w says, b says)
    "conv2d_transpose": (
        "Transposed shared 2-D convolution, as PyTorch's ``conv_transpose2d``",
        _SCATTER_2D.format(w="w[c, f, a, b]"),
        "PyTorch's ``(in_channels, out_channels/groups, KH, KW)``: the layout of the ``conv2d`` weight\n"
        "whose input gradient this is (its F is this op's C).",
        "One bias per output channel.",
    ),
    "tiled_conv2d_transpose": (
        "Transposed tiled 2-D convolution",
        _SCATTER_2D.format(w="w[ti, tj, c, f, a, b]"),
        "TH x TW filter banks (the ``tiled_conv2d`` layout); input position (i, j) uses bank (ti, tj) as\n"
        "``tiled_conv2d`` maps its output positions (``tile_mode``).",
        "One bias per output channel and tile; output position (p, q) uses tile (p % TH, q % TW)\n"
        '        (``"periodic"``) or (p * TH // OH, q * TW // OW) (``"block"``).',
    ),
    "local_conv2d_transpose": (
        "Transposed locally connected (unshared) 2-D convolution",
        _SCATTER_2D.format(w="w[i, j, c, f, a, b]"),
        "A filter bank per *input* position: the ``local_conv2d`` weight of the op from\n"
        "(N, F, OH, OW) to (N, C, H, W), whose input gradient this op is.",
        "One bias per output channel and output position.",
    ),
    "conv1d_transpose": (
        "Transposed shared 1-D convolution, as PyTorch's ``conv_transpose1d``",
        _SCATTER_1D.format(w="w[c, f, k]"),
        "PyTorch's ``(in_channels, out_channels/groups, K)``, the ``conv1d`` layout.",
        "One bias per output channel.",
    ),
    "tiled_conv1d_transpose": (
        "Transposed tiled 1-D convolution",
        _SCATTER_1D.format(w="w[t, c, f, k]"),
        'T filter banks; input position l uses bank l % T (``"periodic"``) or l * T // L (``"block"``).',
        'One bias per output channel and tile, over the output positions as the weight over the input.',
    ),
    "local_conv1d_transpose": (
        "Transposed locally connected (unshared) 1-D convolution",
        _SCATTER_1D.format(w="w[l, c, f, k]"),
        "A filter bank per input position (the ``local_conv1d`` layout).",
        "One bias per output channel and output position.",
    ),
}

_TRANSPOSE_SPATIAL = {
    # spatial rank: (x shape, y shape, output size)
    2: ("(N, C, H, W)", "(N, F, OH, OW)",
        "``OH = (H-1)*SH - PT - PB + DH*(KH-1) + output_padding + 1``, likewise OW"),
    1: ("(N, C, L)", "(N, F, OL)", "``OL = (L-1)*S - P_left - P_right + D*(K-1) + output_padding + 1``"),
}

_TRANSPOSE_GEOMETRY = """
    stride, dilation : {stride}
        Stride and dilation of the forward op whose input gradient this is.
    padding : {padding}
        The forward op's padding: cells cut from each side of the output. There is no
        ``padding_mode``: PyTorch's ``ConvTranspose`` takes zeros only, and so do these ops.
    output_padding : {stride}
        Cells added after the last output row/column (each smaller than the stride or the
        dilation, as in PyTorch); they pick one of the input sizes that the forward op maps
        onto the input's size.
    groups : int
        Input channels split into groups: output channel ``g*Fg + f`` sees the input channels of
        group ``g``, ``Fg = F/groups``."""

_TRANSPOSE_TEMPLATE = '''{title} forward.

    ``{formula}``

    summed over the input channels ``c`` of group ``g``, the input positions and the taps, plus
    the bias; output positions outside the output are dropped. This is
    ``{forward}_backward_input`` of ``x`` as the output gradient (the same kernel runs).

''' + _FORWARD_ARRAYS + '''{geometry}{tile_param}
    out : ndarray, shape {y}, optional
        C-contiguous buffer of the input dtype to write into; returned.{stream_cuda}

    Returns
    -------
    y : ndarray, shape {y}
        {size} (see :func:`lcnumba.geometry.{name}_output_shape`).
{raises}
'''


def _tile_fields(tiled, positions="output positions"):
    return dict(
        tile_param=f'\n    tile_mode : {{"periodic", "block"}}\n        How {positions} map to tiles.' if tiled else "",
        tile_list=", tile_mode" if tiled else "",
        tile_given='\n    tile_mode : {"periodic", "block"}\n        As given to the forward.' if tiled else "",
    )


def _conv_transpose_docstring(fam, part):
    title, formula, w_says, b_says = _TRANSPOSE_PHRASES[fam.name]
    x, y, size = _TRANSPOSE_SPATIAL[fam.spatial]
    _, _, stride, padding, _ = _SPATIAL[fam.spatial]
    padding = padding.replace(', "valid" or "same"', ' or "valid"')
    fields = dict(
        name=fam.name, forward=fam.forward, title=title, formula=formula, x=x, y=y, size=size,
        w=fam.layout(fam.weight_dims), b=fam.layout(fam.bias_dims),
        w_says="\n".join("        " + line for line in w_says.split("\n")), b_says=b_says,
        geometry=_TRANSPOSE_GEOMETRY.format(stride=stride, padding=padding),
        accumulate_long=_ACCUMULATE_LONG,
        stream=_STREAM.format(where="ignored on the CPU"),
        stream_cuda=_STREAM.format(where="CUDA arrays only; ignored on the CPU"),
        raises=_RAISES, **_tile_fields(fam.has_tiles, "input positions (weight) and output positions (bias)"),
    )
    if part != "forward":
        fields.update(
            geometry_list="stride, padding, output_padding, dilation, groups",
            dx_formula=f"``dx = {fam.forward}_forward(dy, w)``",
            dx_says="The forward of the op this one transposes (its kernel runs); see\n"
                    "    ``docs/derivations/conv.md``.",
            dw_formula=f"``{fam.forward}_backward_weight`` with its arrays exchanged: ``x`` in the place of the\n"
                       f"    output gradient, ``dy`` in the place of the input.",
            db_formula=": ``dy`` summed per bias entry",
        )
        return _TEMPLATES[part].format(**fields)
    return _TRANSPOSE_TEMPLATE.format(**fields)


# ---------------------------------------------------------------- max-pooling

_POOL_BACKWARD_OUT = """
    out : ndarray, shape input_shape, optional
        C-contiguous buffer of the dtype of ``dy``; overwritten and returned."""

_POOL_BACKWARD_GEOMETRY = """
    kernel_size, stride, padding, dilation, ceil_mode : optional
        The forward's geometry, as passed to :func:`{forward}` (``stride`` defaults to
        ``kernel_size``, the others to the forward's defaults). All None (the default): the indices
        may be any positions of the plane and ``dx`` is a scatter. With ``kernel_size``, ``dy`` must
        have the forward's output shape for that geometry, and a CUDA call gathers: a thread per
        input cell visits the windows that contain it, in output order (``O(H*W)`` work per plane
        instead of a scan of the plane's outputs per thread). The indices must then be the
        forward's: the gather adds nothing for an index outside its window (the CPU scatters
        either way and adds it where it points). For the forward's indices both forms give the
        same ``dx``, bitwise."""

_POOL = {
    ("max_pool2d", "forward"): '''2-D max-pooling forward, as PyTorch's ``F.max_pool2d``.

    ``y[n, c, i, j] = max_{{a, b}} x[n, c, i*SH - PH + a*DH, j*SW - PW + b*DW]`` over the window cells
    inside the input (padding is ``-inf``).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
        Input, float32 or float64. Never written.
    kernel_size : int or (KH, KW)
        Window size.
    stride : int or (SH, SW), optional
        Step between windows; defaults to ``kernel_size``.
    padding : int or (PH, PW)
        Implicit ``-inf`` cells on both sides, at most ``kernel_size // 2``.
    dilation : int or (DH, DW)
        Step between the cells of a window.
    ceil_mode : bool
        Round the output size up (a last window may run into the right padding,
        but never starts there).
    return_indices : bool
        Also return where each maximum came from. Without it no index is
        computed or stored (a separate, faster kernel runs).
    out : ndarray, shape (N, C, OH, OW), optional
        C-contiguous buffer of the input dtype for ``y``; returned.
    indices_out : ndarray, shape (N, C, OH, OW), optional
        C-contiguous int64 buffer for the indices; only with ``return_indices``.{stream}

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW)
        ``OH = floor((H + 2*PH - DH*(KH-1) - 1) / SH) + 1`` (rounded up with ``ceil_mode``,
        less a window starting in the right padding), likewise OW.
    indices : ndarray of int64, shape (N, C, OH, OW)
        Only with ``return_indices``: flat position ``h * W + w`` of the maximum in the unpadded
        plane ``x[n, c]``; -1 for a window that covers padding only (possible with dilation).
        NaN wins (the last NaN of the window); among equal values the first cell, row-major.

    Raises
    ------
    TypeError
        ``x`` not a float32/float64 ndarray; a parameter of the wrong type; ``out`` or
        ``indices_out`` of the wrong dtype.
    ValueError
        ``x`` not 4-D or with an empty plane; padding larger than half the kernel; a kernel
        larger than the padded input; ``out``/``indices_out`` of the wrong shape, not contiguous,
        read-only or overlapping an input; ``indices_out`` without ``return_indices``.
''',
    ("max_pool2d", "backward"): '''Gradient of :func:`max_pool2d_forward` with respect to ``x``.

    ``dx[n, c].flat[k] = sum of dy[n, c, i, j] over the windows (i, j) with indices[n, c, i, j] == k``.
    Every cell's sum runs in output order, so the result is deterministic and race-free even
    when windows overlap. See ``docs/derivations/max_pool.md``.

    Parameters
    ----------
    dy : ndarray, shape (N, C, OH, OW)
        Gradient of the output, float32 or float64.
    indices : ndarray of int64, shape (N, C, OH, OW)
        The indices returned by the forward. Any flat position of the plane is accepted
        (validated before the kernel runs); -1 contributes nothing.
    input_shape : tuple of 4 ints
        ``(N, C, H, W)`` of the forward input.{geometry}{backward_out}{stream}

    Returns
    -------
    dx : ndarray, shape input_shape

    Raises
    ------
    TypeError
        ``dy`` not float32/float64, ``indices`` not int64, ``out`` of the wrong dtype; a geometry
        parameter of the wrong type.
    ValueError
        Wrong shapes; ``input_shape`` whose N, C differ from ``dy``; a geometry parameter out of
        range, given without ``kernel_size``, or whose output shape is not ``dy``'s; an index outside
        ``[-1, H*W)``; ``out`` of the wrong shape, not contiguous, read-only or overlapping an input.
''',
    ("max_pool1d", "forward"): '''1-D max-pooling forward, as PyTorch's ``F.max_pool1d``.

    Parameters
    ----------
    x : ndarray, shape (N, C, L)
        Input, float32 or float64. Never written.
    kernel_size, stride, padding, dilation : int (or a 1-tuple)
        As in :func:`max_pool2d_forward`, along L; ``stride`` defaults to ``kernel_size``.
    ceil_mode, return_indices : bool
        As in :func:`max_pool2d_forward`.
    out : ndarray, shape (N, C, OL), optional
        C-contiguous buffer of the input dtype for ``y``; returned.
    indices_out : ndarray, shape (N, C, OL), optional
        C-contiguous int64 buffer for the indices; only with ``return_indices``.{stream}

    Returns
    -------
    y : ndarray, shape (N, C, OL)
        ``OL = floor((L + 2*P - D*(K-1) - 1) / S) + 1`` (rounded up with ``ceil_mode``).
    indices : ndarray of int64, shape (N, C, OL)
        Only with ``return_indices``: the position in L of each maximum (-1 for none).

    Raises
    ------
    TypeError, ValueError
        As :func:`max_pool2d_forward`.
''',
    ("max_pool1d", "backward"): '''Gradient of :func:`max_pool1d_forward` with respect to ``x``.

    Parameters
    ----------
    dy : ndarray, shape (N, C, OL)
        Gradient of the output, float32 or float64.
    indices : ndarray of int64, shape (N, C, OL)
        The indices returned by the forward (positions in L, -1 for none).
    input_shape : tuple of 3 ints
        ``(N, C, L)`` of the forward input.{geometry}{backward_out}{stream}

    Returns
    -------
    dx : ndarray, shape (N, C, L)

    Raises
    ------
    TypeError, ValueError
        As :func:`max_pool2d_backward`.
''',
}

# ---------------------------------------------------------------- NetVLAD

_NETVLAD = {
    "forward": '''NetVLAD (and GhostVLAD) pooling forward.

    ``a_ik = softmax_k(w_k . x_i + b_k)`` over all K + G clusters,
    ``V_kd = sum_i a_ik (x_id - c_kd)`` over the K real clusters, each ``V_k``
    L2-normalised (``intra_normalize``), then the flattened ``V`` L2-normalised
    (``final_normalize``). The (N, K, D, M) residuals are never formed:
    ``V = A^T X - (sum_i A) c`` as one GEMM per sample.

    Parameters
    ----------
    x : ndarray, shape (N, D, H, W) or (N, D, M)
        Local descriptors of size D (a feature map, or M descriptors per sample), float32 or
        float64. Never written.
    w : ndarray, shape (K + G, D)
        Soft-assignment weights of the K real clusters, then of the G ghost clusters.
    b : ndarray, shape (K + G,)
        Soft-assignment biases.
    centroids : ndarray, shape (K, D)
        Cluster centres of the real clusters; ``G = w.shape[0] - K``.
    normalize_input : bool
        L2-normalise every descriptor ``x_i`` (over D) first, as the paper does.
{switches}    mask : ndarray of bool or integers, shape (N, M) or (N, H, W), optional
        Valid descriptors (nonzero) of each sample, for samples of different sizes padded into one
        batch: a masked descriptor gets no assignment (it is left out of the softmax's output and
        of the aggregation) and a zero gradient. Masked entries of ``x`` must be finite (padding
        is usually 0). None: every descriptor is valid.
{eps_out}
    Returns
    -------
    y : ndarray, shape (N, K * D)
        Cluster-major: ``y[n, k * D + d]``. Unit norm with ``final_normalize`` unless every
        residual is zero.

    Raises
    ------
    TypeError
        An argument that is not a float32/float64 ndarray, arrays of mixed dtypes, a non-bool
        switch, a ``mask`` that is not of bool or integers, a non-float ``eps``, ``out`` of the
        wrong dtype.
    ValueError
        Wrong ranks or shapes (D of ``w`` and ``centroids`` must match ``x``; ``b`` one per row of
        ``w``; 1 <= K <= rows of ``w``; ``mask`` one entry per descriptor); ``eps`` not finite and
        > 0; ``out`` of the wrong shape, not contiguous, read-only or overlapping an input.

    Notes
    -----
    R. Arandjelović, P. Gronat, A. Torii, T. Pajdla, J. Sivic, "NetVLAD: CNN architecture for
    weakly supervised place recognition", CVPR 2016, Sections 3.1-3.2; Y. Zhong, R. Arandjelović,
    A. Zisserman, "GhostVLAD for set-based face recognition", ACCV 2018 (ghost clusters).
''',
    "backward": '''Gradients of :func:`netvlad_forward` with respect to every input.

    The forward is recomputed per sample (nothing is saved between the calls); the backward
    then runs through the global normalisation, the intra-normalisation, the aggregation, the
    softmax and the input normalisation, as derived in ``docs/derivations/netvlad.md``. Extra
    memory is O(N (K + G) D) for the per-sample weight gradients (summed in sample order, so
    results are bitwise reproducible) plus O((K + G) M) per thread.

    Parameters
    ----------
{dy}    x, w, b, centroids, normalize_input, intra_normalize, final_normalize, mask, eps
        As passed to :func:`netvlad_forward`.
{stream}
    Returns
    -------
    dx : ndarray, shape of x
    dw : ndarray, shape (K + G, D)
    db : ndarray, shape (K + G,)
    dcentroids : ndarray, shape (K, D)

    Raises
    ------
    TypeError, ValueError
        As :func:`netvlad_forward`; ``dy`` must be (N, K * D) of the same dtype.

    Notes
    -----
    A cluster that receives no assignment mass has ``V_k = 0``; its norm is then clamped to
    ``eps`` and every gradient stays finite.
''',
}


# ---------------------------------------------------------------- NetVLAD's parts

_VLAD_AGGREGATE = {
    "forward": '''VLAD aggregation of a soft-assignment the caller computes, and NetVLAD's normalisations.

    ``V_kd = sum_m a_km (x_dm - c_kd)``, then each ``V_k`` L2-normalised (``intra_normalize``),
    then the flattened ``V`` (``final_normalize``): :func:`netvlad_forward` from its aggregation
    on, for an assignment from elsewhere (a separate convolution, a Sinkhorn dustbin as in
    SALAD). The descriptors are used as given (no input normalisation).

    Parameters
    ----------
    x : ndarray, shape (N, D, H, W) or (N, D, M)
        Local descriptors, float32 or float64. Never written.
    assignment : ndarray, shape (N, K, H, W) or (N, K, M)
        ``a_km``, the weight of descriptor m in cluster k (any real values; rows need not sum to 1).
    centroids : ndarray, shape (K, D)
{switches}{eps_out}
    Returns
    -------
    y : ndarray, shape (N, K * D)
        Cluster-major: ``y[n, k * D + d]``.

    Raises
    ------
    TypeError
        An argument that is not a float32/float64 ndarray, arrays of mixed dtypes, a non-bool
        switch, a non-float ``eps``, ``out`` of the wrong dtype.
    ValueError
        Wrong ranks or shapes (``centroids`` (K, D) with D of ``x``; ``assignment`` (N, K) + the
        descriptor axes of ``x``); ``eps`` not finite and > 0; ``out`` of the wrong shape, not
        contiguous, read-only or overlapping an input.
''',
    "backward": '''Gradients of :func:`vlad_aggregate_forward` with respect to ``x``, the assignment and the centroids.

    ``dx = dV^T A``, ``dA = dV X - (dV_k . c_k)`` and ``dc = -(sum_m a_km) dV`` after the
    normalisations' gradients (``docs/derivations/netvlad.md``); the centroid gradient is summed
    over samples in sample order.

    Parameters
    ----------
{dy}    x, assignment, centroids, intra_normalize, final_normalize, eps
        As passed to :func:`vlad_aggregate_forward`.
{stream}
    Returns
    -------
    dx : ndarray, shape of x
    dassignment : ndarray, shape of assignment
    dcentroids : ndarray, shape (K, D)

    Raises
    ------
    TypeError, ValueError
        As :func:`vlad_aggregate_forward`; ``dy`` must be (N, K * D) of the same dtype.
''',
}

_NETVLAD_PCA = {
    "forward": '''The PCA-whitening layer on NetVLAD vectors: ``y = (projection v + bias) / max(||.||, eps)``.

    As ``addPCA.m`` of the NetVLAD authors appends it (a 1x1 convolution and an L2
    normalisation); :func:`netvlad_pca_fit` learns ``projection`` and ``bias``.

    Parameters
    ----------
    v : ndarray, shape (N, P)
        NetVLAD vectors (P = K * D), float32 or float64. Never written.
    projection : ndarray, shape (dim, P)
        One row per output dimension.
    bias : ndarray, shape (dim,)
    eps : float
        The norm is ``max(||.||, eps)``.
    out : ndarray, shape (N, dim), optional
        C-contiguous buffer of the input dtype; returned.
    stream : int
        CUDA stream (CUDA arrays only; ignored on the CPU).

    Returns
    -------
    y : ndarray, shape (N, dim)

    Raises
    ------
    TypeError
        An argument that is not a float32/float64 ndarray, arrays of mixed dtypes, a non-float
        ``eps``, ``out`` of the wrong dtype.
    ValueError
        Wrong ranks or shapes (``projection`` (dim, P) with P of ``v``; ``bias`` one per row of
        ``projection``); ``eps`` not finite and > 0; ``out`` of the wrong shape, not contiguous,
        read-only or overlapping an input.
''',
    "backward": '''Gradients of :func:`netvlad_pca_forward`, to fine-tune the layer.

    Parameters
    ----------
    dy : ndarray, shape (N, dim)
        Gradient of the output, float32 or float64.
    v, projection, bias, eps
        As passed to :func:`netvlad_pca_forward`.
    stream : int
        CUDA stream (CUDA arrays only; ignored on the CPU).

    Returns
    -------
    dv : ndarray, shape (N, P)
    dprojection : ndarray, shape (dim, P)
    dbias : ndarray, shape (dim,)
        Both summed over samples.

    Raises
    ------
    TypeError, ValueError
        As :func:`netvlad_pca_forward`; ``dy`` must be (N, dim) of the same dtype.
''',
}

_NETVLAD_PARTS = {"vlad_aggregate": _VLAD_AGGREGATE, "netvlad_pca": _NETVLAD_PCA}

# Parameter entries shared by NetVLAD and its aggregation part.
_VLAD_ENTRIES = {
    "dy": """    dy : ndarray, shape (N, K * D)
        Gradient of the output, float32 or float64.
""",
    "stream": """    stream : int
        CUDA stream (CUDA arrays only; ignored on the CPU).
""",
    "switches": """    intra_normalize : bool
        L2-normalise every cluster's row ``V_k`` (the paper's intra-normalisation).
    final_normalize : bool
        L2-normalise the flattened ``V`` last.
""",
    "eps_out": """    eps : float
        Every norm is ``max(||v||, eps)``.
    out : ndarray, shape (N, K * D), optional
        C-contiguous buffer of the input dtype; returned.
    stream : int
        CUDA stream (CUDA arrays only; ignored on the CPU).
""",
}


def docstring(fam, part):
    """The numpydoc docstring of the public function ``{fam.name}_{part}``."""
    if fam.kind == "conv":
        return _conv_docstring(fam, part)
    if fam.kind == "conv_transpose":
        return _conv_transpose_docstring(fam, part)
    if fam.kind == "pool":
        return _POOL[fam.name, part].format(stream=_STREAM.format(where="CUDA arrays only; ignored on the CPU"),
                                            backward_out=_POOL_BACKWARD_OUT,
                                            geometry=_POOL_BACKWARD_GEOMETRY.format(forward=f"{fam.name}_forward"))
    if fam.kind == "netvlad":
        return _NETVLAD[part].format(**_VLAD_ENTRIES)
    if fam.kind in _NETVLAD_PARTS:
        return _NETVLAD_PARTS[fam.kind][part].format(**_VLAD_ENTRIES)
    raise KeyError(f"no docstring template for the {fam.kind} family {fam.name}")

