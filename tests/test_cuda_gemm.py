"""The shared GEMM of the CUDA kernels (``lcnumba.gpu.gemm.batched``) against NumPy products.

NetVLAD's products are smaller than one block tile and one reduction chunk in its own tests; here the
tile caps are patched down (``gemm.GM``, ``gemm.GN``) so that tiny operands span several row, column and
reduction tiles, at 1 and 64 threads per block (the simulator runs every GPU thread as a Python thread).
"""

import numpy as np
import pytest
from numba import cuda

from lcnumba import config
from lcnumba.gpu import gemm

N, P, Q, R = 2, 5, 9, 11  # R: two reduction chunks of GK = 8, the second partial


def _operand(rng, count, rows, cols, trans, dtype):
    """``(m, op(m))``: ``op(m)`` (count, rows, cols + 3), ``m`` its transpose when ``trans``; the 3 terms past
    ``cols`` are left out of the product (as NetVLAD's ghost clusters)."""
    m = rng.standard_normal((count, rows, cols + 3) if not trans else (count, cols + 3, rows)).astype(dtype)
    op = m.transpose(0, 2, 1) if trans else m
    return m, op


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_batched_matches_numpy_at_every_tiling(dtype, monkeypatch):
    """Each operand stored both ways, a shared (single-matrix) operand, extra reduction terms left out by
    ``r_count``, plain and accumulated stores; the two block sizes give the same bits."""
    monkeypatch.setattr(gemm, "GM", 4)
    monkeypatch.setattr(gemm, "GN", 8)
    rng = np.random.default_rng(0)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for trans_a, trans_b in ((False, True), (True, False)):  # each operand stored both ways
        a, op_a = _operand(rng, N, P, R, trans_a, dtype)
        b, op_b = _operand(rng, 1, Q, R, not trans_b, dtype)  # one matrix for both samples
        op_b = op_b.transpose(0, 2, 1)  # (1, R + 3, Q)
        start = rng.standard_normal((N, P, Q)).astype(dtype)
        expected = np.einsum("npk,nkq->npq", op_a[:, :, :R].astype(np.float64), op_b[:, :R].astype(np.float64))
        results = []
        for threads, accumulate in ((1, False), (64, False), (64, True)):
            monkeypatch.setattr(config, "THREADS_PER_BLOCK", threads)
            c = cuda.to_device(start)
            gemm.batched(cuda.to_device(a), trans_a, cuda.to_device(b), trans_b, R, accumulate, c, 0)
            got = c.copy_to_host()
            np.testing.assert_allclose(got, expected + (start if accumulate else 0), **tol,
                                       err_msg=f"trans {trans_a, trans_b}, {threads} threads, {accumulate}")
            results.append(got)
        assert np.array_equal(results[0], results[1])
