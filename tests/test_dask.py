"""docs/examples/dask_netvlad.py on a two-worker LocalCluster equals one single-process call."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("dask.distributed", reason="the dask extra is not installed: pip install -e '.[dask]'")

import dask.array as da  # noqa: E402
from dask.distributed import LocalCluster  # noqa: E402

import lcnumba  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "dask_netvlad.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("dask_netvlad", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cluster():
    # threads of this process: no worker start-up, and the kernels are loaded once
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        yield cluster


def test_example_on_a_two_worker_cluster_equals_one_call(example, cluster):
    descriptors, features, (w, b, c) = example.run(cluster.scheduler_address, n=300, d=16, h=5, w=5, chunk=64,
                                                   clusters=4, ghost=1, verbose=False)
    assert features.shape == (300, 16, 5, 5) and features.dtype == np.float32
    assert descriptors.shape == (300, 4 * 16)
    np.testing.assert_array_equal(descriptors, lcnumba.netvlad_forward(features, w, b, c))


def test_example_starts_its_own_local_cluster(example, capsys):
    descriptors, features, (w, b, c) = example.run(None, n=96, d=8, h=3, w=4, chunk=40, clusters=3, ghost=0,
                                                   workers=2, processes=False)
    np.testing.assert_array_equal(descriptors, lcnumba.netvlad_forward(features, w, b, c))
    assert "on 2 workers" in capsys.readouterr().out


@pytest.mark.parametrize("shape", [(50, 6, 4, 3), (50, 6, 12)])
def test_uneven_chunks_and_three_dimensional_features(example, cluster, shape):
    from dask.distributed import Client

    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_normal(shape)).astype(np.float64)
    w, b, c = lcnumba.netvlad_init(x, 3, num_ghost=1, seed=0)
    features = da.from_array(x, chunks=(7, 2) + shape[2:])  # uneven along N, split along D too
    with Client(cluster):
        lazy = example.netvlad_descriptors(features, w, b, c)
        assert lazy.shape == (50, 18) and lazy.dtype == np.float64
        np.testing.assert_array_equal(lazy.compute(), lcnumba.netvlad_forward(x, w, b, c))


def test_reads_features_from_a_npy_file(example, cluster, tmp_path):
    x = np.abs(np.random.default_rng(1).standard_normal((40, 8, 3, 3))).astype(np.float32)
    np.save(tmp_path / "maps.npy", x)
    descriptors, features, (w, b, c) = example.run(cluster.scheduler_address, features_path=tmp_path / "maps.npy",
                                                   chunk=16, clusters=2, ghost=0, verbose=False)
    np.testing.assert_array_equal(features, x)
    np.testing.assert_array_equal(descriptors, lcnumba.netvlad_forward(x, w, b, c))
