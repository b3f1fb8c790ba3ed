"""The public layer: functions generated from the op table, one core per family, the host array backend.

``public``   the public functions (``lcnumba.<family>_<pass>``), made from ``lcnumba.table``
``conv``     cores of the convolution family (shared, tiled, local; 2-D and 1-D)
``pool``     cores of max-pooling
``netvlad``  cores of NetVLAD
``backend``  the host array backend (NumPy arrays, CPU kernels); ``lcnumba.gpu.backend`` is its CUDA twin
``docs``     the docstring templates
"""
