#!/usr/bin/env bash
# The CUDA check on a machine with a GPU, in one command (under 8 minutes on an H100):
#
#   benchmarks/gpu_check.sh [OUTPUT_DIR]        # default: gpu_check/
#
# 1. installs what the machine's Python lacks (numpy, numba, numba-cuda, pytest, torch) from the wheel
#    folder carried with the tree (WHEELS, default wheels/), offline, and lcnumba itself from the tree;
# 2. runs the CUDA tests on the device (tests/test_cuda_*.py: with a GPU present the simulator is off);
# 3. writes the static kernel report (benchmarks/gpu_report.py) when ptxas is on the machine;
# 4. times every workload on the GPU against PyTorch (benchmarks/compare.py --device cuda, float32,
#    TensorFloat-32 off in cuBLAS and cuDNN).
#
# Everything goes to OUTPUT_DIR: env.txt (GPU, driver, versions), tests.txt, gpu_report.md,
# compare_cuda.md; the script's exit status is that of the tests.
#
# The wheel folder is built beforehand on a machine with network access, for the GPU machine's Python
# version and platform (here CPython 3.11, manylinux x86_64; CUDA 12 or 13 driver):
#
#   python -m pip download --dest wheels --only-binary=:all: --python-version 3.11 \
#       --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
#       numpy numba "numba-cuda[cu13]" pytest torch
#
# (use "numba-cuda[cu12]" for a CUDA 12 driver). Leave torch out of the folder when the machine has it
# (its wheel is about 1 GB with its CUDA libraries); without torch the comparison's PyTorch rows are
# skipped with a note. wheels/ and gpu_check/ are ignored by git: they travel next to the tree.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check}
WHEELS=${WHEELS:-wheels}
PY=${PYTHON:-python3}
BUDGET=${BUDGET:-1.0}
mkdir -p "$OUT"

have() { "$PY" -c "import $1" >/dev/null 2>&1; }
missing=()
have numpy || missing+=(numpy)
have numba || missing+=(numba)
have numba.cuda || missing+=("numba-cuda[cu13]")
have pytest || missing+=(pytest)
have torch || missing+=(torch)
if ((${#missing[@]})); then
    echo "== installing from $WHEELS: ${missing[*]}"
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" "${missing[@]}" || exit 2
fi
have lcnumba || "$PY" -m pip install -q --no-deps --no-build-isolation -e . || exit 2

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
    "$PY" - <<'EOF'
import numba, numpy, sys
from numba import cuda
print("python", sys.version.split()[0], "numpy", numpy.__version__, "numba", numba.__version__)
print("numba-cuda device:", cuda.get_current_device().name, "cc", cuda.get_current_device().compute_capability)
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
except ImportError:
    print("torch: not installed")
EOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

echo "== CUDA tests on the device"
NUMBA_ENABLE_CUDASIM=0 timeout 240 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda_conv.py \
    tests/test_cuda_conv_input_gemm.py tests/test_cuda_gemm.py tests/test_cuda_local.py tests/test_cuda_pool.py \
    tests/test_cuda_netvlad.py tests/test_cuda_dispatch.py 2>&1 | tee "$OUT/tests.txt"
status=${PIPESTATUS[0]}

if command -v ptxas >/dev/null 2>&1 || [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/ptxas" ]; then
    echo "== kernel report"
    timeout 120 "$PY" benchmarks/gpu_report.py --output "$OUT/gpu_report.md" > /dev/null 2>&1 \
        || echo "gpu_report failed (see above)" > "$OUT/gpu_report.md"
fi

echo "== lcnumba against PyTorch on the GPU (float32, TF32 off)"
timeout 300 "$PY" benchmarks/compare.py --device cuda --dtype float32 --budget "$BUDGET" --keep-going \
    --output "$OUT/compare_cuda.md" 2>&1 | tail -60
echo "tables in $OUT/"
exit "$status"
