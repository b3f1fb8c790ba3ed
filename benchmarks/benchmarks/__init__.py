"""The asv benchmark suite of lcnumba.

One module per op family (``bench_conv``, ``bench_pool``, ``bench_netvlad``),
the CUDA timings (``bench_cuda``, skipped without a GPU) and cold-compile
times (``bench_compile``). Every workload comes from ``benchmarks/workloads.py``
through ``common``, so asv and ``benchmarks/compare.py`` time the same shapes
on the same data.
"""
