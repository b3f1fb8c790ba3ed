"""Which arrays go to CUDA, what comes back, and the rules every CUDA kernel follows.

- Numba device arrays and any object exposing ``__cuda_array_interface__``
  run on CUDA and return Numba device arrays; host and device arrays mixed
  in one call are a ``TypeError``.
- ``import lcnumba`` works without numba-cuda; a CUDA call then says what to install.
- No atomics anywhere in ``lcnumba/gpu``; kernels are defined at module
  level. (The index arithmetic they compile is tested in ``test_indexing.py``.)
- Where NVVM is installed, every kernel the simulator ran also compiles
  to PTX for a real GPU (sm_90), both dtypes.
"""

import ast
import os
import pathlib
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numba import cuda
from numba.cuda.cudadrv.devicearray import is_cuda_ndarray

import lcnumba
from lcnumba import config
from lcnumba.gpu import launch

GPU_DIR = pathlib.Path(lcnumba.__file__).parent / "gpu"
REPO = pathlib.Path(lcnumba.__file__).parent.parent


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(config, "THREADS_PER_BLOCK", 8)


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def count_host_path(monkeypatch, stream):
    """A dict that counts, from now on, kernel launches, device allocations and host synchronisations (simulator)."""
    from numba.cuda.simulator import kernel as sim_kernel
    from numba.cuda.simulator.cudadrv import devicearray as sim_array

    counts = {"launch": 0, "alloc": 0, "sync": 0}

    def counting(key, fn):
        def wrapped(*args, **kwargs):
            if key != "launch" or not (args[0]._device or sim_kernel._kernel_context):
                counts[key] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(sim_kernel.FakeCUDAKernel, "__call__", counting("launch", sim_kernel.FakeCUDAKernel.__call__))
    for name in ("device_array", "device_array_like", "to_device", "mapped_array", "pinned_array"):
        monkeypatch.setattr(cuda, name, counting("alloc", getattr(cuda, name)))
    monkeypatch.setattr(sim_array.FakeCUDAArray, "copy_to_host", counting("sync", sim_array.FakeCUDAArray.copy_to_host))
    monkeypatch.setattr(type(stream), "synchronize", counting("sync", type(stream).synchronize))
    monkeypatch.setattr(cuda, "synchronize", counting("sync", cuda.synchronize))
    return counts


class Interface:
    """A foreign CUDA array (like a CuPy array or a PyTorch CUDA tensor): only ``__cuda_array_interface__``."""

    def __init__(self, device_array):
        self._keep = device_array
        if hasattr(device_array, "__cuda_array_interface__"):
            self.__cuda_array_interface__ = device_array.__cuda_array_interface__
        else:  # the simulator's device memory is host memory
            host = device_array._ary
            self.__cuda_array_interface__ = {
                "shape": host.shape, "typestr": host.dtype.str, "data": (host.ctypes.data, False),
                "strides": None if host.flags.c_contiguous else host.strides, "version": 3,
            }


def test_interface_objects_run_on_cuda_and_return_device_arrays():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 4, 5, 5)), rng.standard_normal((3, 4, 2, 2)), rng.standard_normal(3)
    y = lcnumba.conv2d_forward(Interface(dev(x)), Interface(dev(w)), Interface(dev(b)), padding=1)
    assert is_cuda_ndarray(y)
    np.testing.assert_allclose(y.copy_to_host(), lcnumba.conv2d_forward(x, w, b, padding=1), rtol=1e-12)
    out = dev(np.zeros(y.shape))
    assert lcnumba.conv2d_forward(Interface(dev(x)), Interface(dev(w)), out=Interface(out), padding=1) is not None
    np.testing.assert_allclose(out.copy_to_host(), lcnumba.conv2d_forward(x, w, padding=1), rtol=1e-12)
    p, idx = lcnumba.max_pool2d_forward(Interface(dev(x)), 2, return_indices=True)
    assert is_cuda_ndarray(p) and is_cuda_ndarray(idx)
    np.testing.assert_array_equal(p.copy_to_host(), lcnumba.max_pool2d_forward(x, 2))
    c = rng.standard_normal((2, 4))
    v = lcnumba.netvlad_forward(Interface(dev(x)), Interface(dev(w[:, :, 0, 0])), Interface(dev(b)),
                                Interface(dev(c)))
    np.testing.assert_allclose(v.copy_to_host(), lcnumba.netvlad_forward(x, w[:, :, 0, 0], b, c), rtol=1e-10)


def test_read_only_interface_out_is_refused():
    x = dev(np.ones((1, 1, 3, 3)))
    out = Interface(dev(np.zeros((1, 1, 2, 2))))
    out.__cuda_array_interface__ = dict(out.__cuda_array_interface__, data=(out.__cuda_array_interface__["data"][0],
                                                                            True))
    with pytest.raises(ValueError, match="^out: expected a writeable array"):
        lcnumba.conv2d_forward(x, dev(np.ones((1, 1, 2, 2))), out=out)


@pytest.mark.parametrize("call", [
    lambda h, d: lcnumba.conv2d_forward(d(np.ones((1, 1, 3, 3))), h(np.ones((1, 1, 2, 2)))),
    lambda h, d: lcnumba.local_conv1d_backward_bias(h(np.ones((1, 2, 3))), (2, 3), out=d(np.ones((2, 3)))),
    lambda h, d: lcnumba.max_pool2d_backward(d(np.ones((1, 1, 2, 2))), h(np.zeros((1, 1, 2, 2), np.int64)),
                                             (1, 1, 4, 4)),
    lambda h, d: lcnumba.netvlad_forward(h(np.ones((1, 2, 3))), d(np.ones((2, 2))), d(np.ones(2)),
                                         d(np.ones((1, 2)))),
], ids=["conv2d", "local_conv1d_bias", "max_pool2d_bwd", "netvlad"])
def test_mixing_host_and_device_arrays_is_a_type_error(call):
    with pytest.raises(TypeError, match="CUDA array mixed with a NumPy array"):
        call(lambda a: a, dev)


def test_threads_per_block_is_read_at_launch(monkeypatch):
    monkeypatch.setattr(config, "THREADS_PER_BLOCK", 3)
    assert launch.threads_per_block() == 3 and launch.block_threads(1000) == 3
    monkeypatch.setattr(config, "THREADS_PER_BLOCK", 256)
    assert launch.block_threads(1000) == 256 and launch.block_threads(40) == 64


# ---------------------------------------------------------------- without numba-cuda


def test_import_without_numba_cuda_and_a_clear_error_on_a_cuda_call():
    code = textwrap.dedent("""
        import sys
        sys.modules["numba.cuda"] = None          # as if numba-cuda were not installed
        import numpy as np
        import lcnumba
        assert "lcnumba.gpu" not in sys.modules
        y = lcnumba.conv2d_forward(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)))   # the CPU still works
        class Foreign:
            __cuda_array_interface__ = {"shape": (1, 1, 3, 3), "typestr": "<f8", "data": (0, False), "version": 3}
        try:
            lcnumba.conv2d_forward(Foreign(), Foreign())
        except ImportError as exc:
            print("ERROR", exc)
    """)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "pip install lcnumba[cuda]" in done.stdout


def test_import_lcnumba_does_not_import_numba_cuda():
    code = "import sys, lcnumba; print('numba.cuda' in sys.modules, 'lcnumba.gpu' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.stdout.split() == ["False", "False"], done.stderr


# ---------------------------------------------------------------- rules of the kernels


def _sources():
    return sorted(GPU_DIR.glob("*.py"))


def test_no_atomics_in_the_cuda_kernels():
    """Every reduction runs in a fixed order: no ``cuda.atomic`` call (float or otherwise) in lcnumba/gpu."""
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                assert node.attr != "atomic", f"{path.name}:{node.lineno} uses cuda.atomic"
        assert "atomic.add" not in path.read_text(), path.name


def test_kernels_are_defined_at_module_level():
    """A kernel defined inside a function would be compiled again on every call.

    The one exception is a factory (a kernel per register tile side, ``gemm.specialise``) called only by
    module-level statements, so once per process.
    """
    decorators = {"kernel", "device_function", "jit"}
    for path in _sources():
        tree = ast.parse(path.read_text())
        factories = set()
        for top in tree.body:
            for node in ast.walk(top):
                if node is top or not isinstance(node, ast.FunctionDef):
                    continue
                for dec in node.decorator_list:
                    name = dec.attr if isinstance(dec, ast.Attribute) else getattr(dec, "id", None)
                    if isinstance(dec, ast.Call):
                        func = dec.func
                        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                    if name in decorators:
                        assert isinstance(top, ast.FunctionDef), \
                            f"{path.name}:{node.lineno} defines a kernel inside a {type(top).__name__}"
                        factories.add(top.name)
        for top in tree.body:
            if isinstance(top, (ast.FunctionDef, ast.ClassDef)):
                for node in ast.walk(top):
                    assert not (isinstance(node, ast.Name) and node.id in factories), \
                        f"{path.name}:{node.lineno}: {node.id} (it defines a kernel) is used inside a function"


# ---------------------------------------------------------------- compiled for a real GPU


_COMPILE = """
import importlib, os, pickle, re, shutil, subprocess, sys, tempfile, types
from numba import cuda
import numba.cuda.dispatcher as dispatcher
# device functions ask the driver for the compute capability; there may be no GPU here
dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
try:
    cuda.compile_ptx(lambda a: None, "void(float32[:])", cc=(9, 0))
except Exception as exc:
    print("NO-NVVM", exc)
    sys.exit(0)
ptxas = shutil.which("ptxas")
for mod, name, dtype in pickle.load(open(sys.argv[1], "rb")):
    kern = getattr(importlib.import_module(mod), name)
    sig = kern.signature_for(dtype)
    ptx, _ = cuda.compile_ptx(kern.py_func, sig, cc=(9, 0), launch_bounds=kern.launch_bounds)
    assert "atom." not in ptx, name
    if "float32" in sig:
        assert ".f64" not in ptx, f"{name} does float64 arithmetic on float32 data"
    if ptxas:
        # within the launch bounds' 64 registers, nothing spills: the GEMM kernels keep their register tile in
        # registers (the float64 ones on a narrower tile), the local forward its sample accumulators (the
        # float64 one fewer of them), NetVLAD's float64 softmax and cluster gradient their row offsets
        with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as fh:
            fh.write(ptx)
        info = subprocess.run([ptxas, "-arch=sm_90", "-v", fh.name, "-o", os.devnull], capture_output=True,
                              text=True).stderr
        os.unlink(fh.name)
        spills = [int(b) for b in re.findall(r"(\\d+) bytes spill", info)]
        assert spills and not any(spills), f"{name} ({dtype}) spills: {info}"
    print("OK", name)
"""


@pytest.mark.skipif(not launch.SIMULATOR, reason="on a GPU every test compiles the kernels anyway")
def test_every_kernel_compiles_for_a_real_gpu(tmp_path, monkeypatch):
    """Launch every kernel on the simulator, both dtypes, then compile each for sm_90 with its declared signature."""
    from lcnumba.gpu import conv, gemm, jit, kernels, local, netvlad, pool

    monkeypatch.setattr(conv, "MIN_COLUMNS_PER_SPLIT", 2)
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((2, 2, 4, 4)).astype(dtype)
        for name, w, b in (("conv2d", np.ones((2, 2, 2, 2), dtype), np.ones(2, dtype)),
                           ("local_conv2d", np.ones((3, 3, 2, 2, 2, 2), dtype), np.ones((2, 3, 3), dtype))):
            y = getattr(lcnumba, f"{name}_forward")(dev(x), dev(w), dev(b))
            getattr(lcnumba, f"{name}_backward")(y, dev(x), dev(w), dev(b))
        lcnumba.conv2d_forward(dev(x)[..., ::2], dev(np.ones((2, 2, 1, 1), dtype)))
        # stride 1 above takes the input gradient's GEMM; stride 2 the gather
        lcnumba.conv2d_backward_input(dev(np.ones((2, 2, 2, 2), dtype)), dev(np.ones((2, 2, 2, 2), dtype)), x.shape,
                                      stride=2)
        lcnumba.conv2d_backward_weight(dev(np.ones((0, 2, 3, 3), dtype)), dev(x[:0]), (2, 2, 2, 2))
        p, i = lcnumba.max_pool2d_forward(dev(x), 2, return_indices=True)
        lcnumba.max_pool2d_forward(dev(x), 2)
        lcnumba.max_pool2d_backward(p, i, x.shape)
        args = (dev(x), dev(np.ones((3, 2), dtype)), dev(np.ones(3, dtype)), dev(np.ones((2, 2), dtype)))
        lcnumba.netvlad_backward(lcnumba.netvlad_forward(*args), *args)
    seen = [(mod.__name__, name, str(dtype))
            for mod in (conv, gemm, kernels, local, netvlad, pool)
            for name, kern in vars(mod).items() if isinstance(kern, jit.Kernel)
            for dtype in kern._compiled]
    sigs = tmp_path / "sigs.pkl"
    sigs.write_bytes(pickle.dumps(list(seen)))
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run([sys.executable, "-c", _COMPILE, str(sigs)], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=600)
    if "NO-NVVM" in done.stdout:
        pytest.skip("NVVM and NVRTC (pip install nvidia-nvvm nvidia-cuda-nvrtc) are not installed")
    assert done.returncode == 0, done.stderr[-3000:]
    compiled = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("OK")}
    kernels = {"conv_forward", "conv_forward_rt2", "conv_backward_input", "conv_backward_input_gemm",
               "conv_backward_input_gemm_rt2", "input_gemm_tables", "conv_backward_weight",
               "conv_backward_weight_rt2", "conv_backward_bias", "max_pool2d_fwd", "max_pool2d_bwd", "bgemm", "bgemm_rt2",
               "softmax_assign", "reduce_splits", "copy6", "fill1", "local_forward", "local_forward_nb4",
               "local_backward_weight", "local_dpatch", "local_gather_input"}
    assert kernels <= compiled, kernels - compiled


def test_arrays_past_the_32_bit_index_math_are_refused_before_any_launch():
    from types import SimpleNamespace

    huge = (2**16, 2**15)  # 2**31 elements
    with pytest.raises(ValueError, match=r"^x: CUDA arrays of at most 2147483647 elements are supported, got 2147483648$"):
        launch.check_int32("x", SimpleNamespace(shape=huge))
    launch.check_int32("x", SimpleNamespace(shape=(2**16, 2**15 - 1)))
    with pytest.raises(ValueError, match=r"^out: CUDA arrays of at most 2147483647 elements"):
        launch.output(None, "out", huge, np.float32, {})


def _add_one(a):
    for e in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        a[e] += 1


def test_declared_kernels_check_their_arguments_and_bare_kernels_still_compile_lazily():
    from lcnumba.gpu import jit

    declared = jit.kernel("void({f}[::1])")(_add_one)
    a = dev(np.zeros(5, np.float32))
    declared[2, 2, 0](a)
    with pytest.raises(TypeError, match=r"kernel _add_one launched with argument 0: float32 array of shape \(5, 1\)"):
        declared[2, 2, 0](a.reshape(5, 1))
    bare = jit.kernel(_add_one)
    bare[2, 2](a)
    np.testing.assert_array_equal(a.copy_to_host(), np.full(5, 2, np.float32))
