"""NetVLAD descriptors of a large feature array, chunked along the batch axis, on a Dask cluster.

Each sample's NetVLAD vector depends on that sample's local descriptors
only, so a ``(N, D, H, W)`` array of feature maps split into chunks of
samples maps onto ``(N, K * D)`` descriptors block by block with
``dask.array.map_blocks``: every block is one ``lcnumba.netvlad_forward``
call on a worker, and the result equals one call on the whole array.

Usage::

    python docs/examples/dask_netvlad.py                      # a LocalCluster on this machine
    python docs/examples/dask_netvlad.py tcp://host:8786      # a running dask scheduler
    python docs/examples/dask_netvlad.py --features maps.npy  # (N, D, H, W) features from a .npy file

Without ``--features`` the feature maps are random, generated on the
workers chunk by chunk, so nothing of size N is ever built on the client.
Needs ``pip install 'lcnumba[dask]'``.
"""

import argparse
import time

import dask.array as da
import numpy as np
from dask.distributed import Client, LocalCluster

import lcnumba


# magictoken.dask_netvlad.begin
def _netvlad_block(block, w, b, centroids):
    """One chunk of samples (n, D, H, W) -> its (n, K * D) NetVLAD vectors, on a worker."""
    return lcnumba.netvlad_forward(block, w, b, centroids)


def netvlad_descriptors(features, w, b, centroids):
    """Lazy NetVLAD descriptors (N, K * D) of a dask array of feature maps (N, D, H, W) or (N, D, M).

    The array may be chunked along N in any way; the other axes are made one chunk each
    (a block must hold whole samples). Evaluate the result with ``.compute()`` or keep it lazy.
    """
    features = features.rechunk({axis: -1 for axis in range(1, features.ndim)})
    k, d = centroids.shape
    return features.map_blocks(
        _netvlad_block, w, b, centroids,
        dtype=features.dtype,
        chunks=(features.chunks[0], (k * d,)),       # (n, D, ...) blocks become (n, K * D)
        drop_axis=list(range(2, features.ndim)),
    )
# magictoken.dask_netvlad.end


def random_features(n, d, h, w, chunk, seed, dtype=np.float32):
    """Non-negative random feature maps (as after a ReLU), generated chunk by chunk on the workers."""
    rng = da.random.default_rng(seed)
    return abs(rng.standard_normal((n, d, h, w), chunks=(chunk, d, h, w)).astype(dtype))


def parameters(features, clusters, ghost, seed, sample=64):
    """NetVLAD parameters from k-means on the first ``sample`` feature maps (``lcnumba.netvlad_init``)."""
    first = np.asarray(features[:sample].compute())
    return lcnumba.netvlad_init(first, clusters, num_ghost=ghost, seed=seed)


def run(address=None, *, n=4096, d=64, h=8, w=8, chunk=256, clusters=16, ghost=2, seed=0, features_path=None,
        workers=2, processes=True, verbose=True):
    """Compute the descriptors on a cluster; return ``(descriptors, features, (w, b, centroids))``.

    ``address`` is a scheduler's address, or None for a ``LocalCluster`` of ``workers`` workers
    with one thread each (in worker processes, or threads of this process with ``processes=False``).
    ``features`` is returned as the NumPy array the descriptors were computed from.
    """
    if address is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                               dashboard_address=":0")
        client = Client(cluster)
    else:
        cluster, client = None, Client(address)
    try:
        if features_path is not None:
            array = np.load(features_path, mmap_mode="r")
            features = da.from_array(array, chunks=(chunk,) + array.shape[1:])
        else:
            features = random_features(n, d, h, w, chunk, seed).persist()  # generated once, kept on the workers
        vlad_w, vlad_b, centroids = parameters(features, clusters, ghost, seed)
        lazy = netvlad_descriptors(features, vlad_w, vlad_b, centroids)
        start = time.perf_counter()
        descriptors = lazy.compute()
        seconds = time.perf_counter() - start
        if verbose:
            n_workers = len(client.scheduler_info()["workers"])
            print(f"NetVLAD of {features.shape} features in {features.numblocks[0]} chunks of <= {chunk} samples "
                  f"on {n_workers} workers: descriptors {descriptors.shape} in {seconds:.2f} s")
        return descriptors, np.asarray(features.compute()), (vlad_w, vlad_b, centroids)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", nargs="?", help="address of a dask scheduler (default: start a LocalCluster)")
    parser.add_argument("--features", help=".npy file of (N, D, H, W) or (N, D, M) feature maps")
    parser.add_argument("--n", type=int, default=4096, help="samples of random features (default 4096)")
    parser.add_argument("--chunk", type=int, default=256, help="samples per chunk (default 256)")
    parser.add_argument("--clusters", type=int, default=16)
    parser.add_argument("--ghost", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="workers of the LocalCluster (default 2)")
    parser.add_argument("--check", action="store_true", help="compare with one call on the whole array")
    args = parser.parse_args(argv)
    descriptors, features, (w, b, c) = run(args.address, n=args.n, chunk=args.chunk, clusters=args.clusters,
                                           ghost=args.ghost, features_path=args.features, workers=args.workers)
    if args.check:
        expected = lcnumba.netvlad_forward(features, w, b, c)
        print("equal to the single-process call:", bool(np.array_equal(descriptors, expected)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
