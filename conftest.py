"""Run the CUDA tests on Numba's CUDA simulator when no GPU is usable.

``NUMBA_ENABLE_CUDASIM`` must be set before Numba is first imported, so
this looks for a GPU without importing Numba: a ``/dev/nvidia*`` device
node or a working ``nvidia-smi``. An explicit ``NUMBA_ENABLE_CUDASIM`` in
the environment is left alone (set it to 0 to insist on a real GPU, or to
1 to force the simulator).
"""

import glob
import os
import shutil
import subprocess


def _gpu_present():
    if not glob.glob("/dev/nvidia[0-9]*"):
        return False
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return True
    try:
        return subprocess.run([smi, "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


if "NUMBA_ENABLE_CUDASIM" not in os.environ and not _gpu_present():
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
