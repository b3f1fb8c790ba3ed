"""``python -m lcnumba warmup``: which jobs a selection makes, its errors, and a run in worker processes."""

import pytest

import lcnumba.__main__ as cli
from lcnumba import table, warmup


def test_every_2d_family_is_in_one_kernel_set():
    members = [name for names in warmup.KERNEL_SETS.values() for name in names]
    assert sorted(members) == sorted(fam.name for fam in warmup.families())


def test_all_jobs_cover_every_family_for_both_dtypes_once():
    jobs = warmup.jobs()
    assert len(jobs) == 2 * len(warmup.KERNEL_SETS)
    for dtype in warmup.DTYPES:
        served = [name for _, names, d in jobs if d == dtype for name in names]
        assert sorted(served) == sorted(fam.name for fam in warmup.families())


def test_a_1d_form_selects_its_2d_twin_and_repeats_collapse():
    assert warmup.jobs(["local_conv1d", "local_conv2d"], ["float64"]) == [("local", ("local_conv2d",), "float64")]
    assert warmup.jobs(["max_pool1d"], ["float32", "float32"]) == [("pool", ("max_pool2d",), "float32")]
    assert warmup.jobs(["tiled_conv1d"], ["float32"]) == [("conv", ("tiled_conv2d",), "float32")]


def test_largest_kernel_sets_start_first():
    order = list(warmup.KERNEL_SETS)
    ranks = [order.index(kernel_set) for kernel_set, _, _ in warmup.jobs()]
    assert ranks == sorted(ranks)


@pytest.mark.parametrize("argv, unknown", [(["--ops", "conv2d,conv3d"], "'conv3d'"),
                                           (["--dtype", "float16"], "'float16'"),
                                           (["--ops", ","], "no op given")])
def test_unknown_names_are_an_error_that_lists_the_choices(argv, unknown, capsys):
    assert cli.main(["warmup", "--quiet"] + argv) == 2
    err = capsys.readouterr().err
    assert unknown in err and "choose from" in err
    choices = err.split("choose from ")[1]
    assert ("float32" in choices) if "dtype" in err else all(name in choices for name in table.BY_NAME)


def test_warmup_in_two_processes_compiles_what_the_process_then_runs(tmp_path, monkeypatch, capsys):
    """Both pooling jobs (float32, float64) run in worker processes and fill the cache they were given."""
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    assert cli.main(["warmup", "--ops", "max_pool1d", "--processes", "2", "--quiet", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "max_pool2d float32" in out and "max_pool2d float64" in out
    assert "compiled max_pool2d for float32 and float64" in out
    for kernel in ("max_pool2d_fwd", "max_pool2d_fwd_indices", "max_pool2d_bwd"):
        assert len(list(tmp_path.rglob(f"pool.{kernel}-*.nbc"))) == 2, f"{kernel}: not cached for both dtypes"
