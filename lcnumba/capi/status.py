"""Status codes of the C entry points.

Every entry point returns ``LCN_OK`` (0) or one of the negative codes below,
and returns it before any output is written: the arguments are checked in
compiled code, in the order of this table (the first failing check is
reported), before any kernel runs.
"""

import enum


class Status(enum.IntEnum):
    """Status codes; the C header spells them ``LCN_<NAME>``."""

    OK = 0
    ERR_NULL = -1
    ERR_SIZE = -2
    ERR_PARAMETER = -3
    ERR_FLAG = -4
    ERR_GROUPS = -5
    ERR_SHAPE = -6
    ERR_GEOMETRY = -7
    ERR_OVERLAP = -8
    ERR_INDEX = -9
    ERR_INTERNAL = -10


#: What each code means, as written into the header.
MEANINGS = {
    Status.OK: "success: every output was written",
    Status.ERR_NULL: "a required pointer is NULL (only `bias` of a convolution forward may be NULL, "
                     "`indices` of a max-pooling forward with return_indices = 0, and NetVLAD's `mask`)",
    Status.ERR_SIZE: "a dimension out of range: the batch n < 0, another size < 1, a size >= 2^31, "
                     "or a buffer of more than 2^59 elements",
    Status.ERR_PARAMETER: "a parameter out of range: stride, dilation or groups < 1, padding or output_padding < 0, "
                          "any of them >= 2^31; output_padding not below the stride or the dilation of its axis; "
                          "eps not finite and > 0",
    Status.ERR_FLAG: "a flag that is not 0 or 1 (tile_mode, accumulate, ceil_mode, return_indices, "
                     "normalize_input, intra_normalize, final_normalize), a padding_mode that is not one of "
                     "LCN_PADDING_*, or a non-NULL `indices` with return_indices = 0",
    Status.ERR_GROUPS: "channels or filters not divisible by groups",
    Status.ERR_SHAPE: "dimensions that disagree: the weight's channels cg != c / groups (wc != c when "
                      "transposed), local weights whose (oh, ow) are not the output size ((wh, ww) not the input "
                      "size when transposed), NetVLAD k > kg",
    Status.ERR_GEOMETRY: "no output: a dilated kernel larger than the padded input, a transposed convolution's "
                         "padding larger than what its kernel and output_padding add; max-pooling padding larger "
                         "than half the kernel; a padding that its padding_mode cannot fill (reflect: not below "
                         "the input size, circular: above it)",
    Status.ERR_OVERLAP: "an output buffer overlaps an input buffer or another output",
    Status.ERR_INDEX: "a max-pooling index outside [-1, h * w) of its plane",
    Status.ERR_INTERNAL: "a kernel failed (out of memory for its workspace); the outputs are unspecified",
}


def header_name(status):
    """``Status.ERR_NULL`` -> ``"LCN_ERR_NULL"``."""
    return "LCN_" + Status(status).name
