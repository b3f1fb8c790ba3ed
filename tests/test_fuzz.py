"""Fuzzing of every public function: valid calls match the references, invalid ones fail cleanly.

Each case is a valid call drawn at random (shapes, geometry, dtypes, strides of
the inputs, NaN and inf values, ``out`` buffers, ``accumulate``) with at most one
argument then spoilt: a wrong type (list, scalar, None, string, object), dtype
(int, bool, float16, complex, object, the other float), rank, a shape off by
one or zero or negative, geometry that leaves no output, a stride, padding,
dilation, groups or tile mode out of range, huge sizes, an ``out`` of the
wrong shape, dtype or order, read-only, or overlapping an input. The call must
then either

- return what ``lcnumba.testing`` returns for the same arguments (NaN and inf
  in the same places, ``out`` returned itself, inputs unchanged), or
- raise ``TypeError`` or ``ValueError`` whose message reads
  ``"<name>: expected ..., got ..."`` and names the spoilt argument (or, for a
  shape that no longer fits, one of the call's arguments).

Anything else is a failure: another exception, a wrong answer, a written
input, or a crash. The cases run in a child process (this file run as a
script), so that a segfault is reported with the case that caused it instead
of killing pytest. The child prints the number of cases run and the distinct
error paths hit, ``(exception, argument, expected ...)`` with numbers
blanked; the test prints them too (``pytest -s``).

``LCNUMBA_FUZZ_EXAMPLES`` sets the examples per public function (default 100,
5,000 cases in all); ``LCNUMBA_FUZZ_SUMMARY`` names a JSON file to keep the
child's summary in. The default run draws the same cases every time (the
test suite's time and result do not vary); ``LCNUMBA_FUZZ_RANDOM=1`` draws
new ones, for searching. Run as a script (``python tests/test_fuzz.py
--help``) it also takes ``--only`` and ``--shrink``.
"""

import inspect
import json
import os
import re
import subprocess
import sys
import traceback
import zlib
from pathlib import Path

import numpy as np
import pytest

from lcnumba import table

EXAMPLES = int(os.environ.get("LCNUMBA_FUZZ_EXAMPLES", "100"))
RANDOM = os.environ.get("LCNUMBA_FUZZ_RANDOM", "") not in ("", "0")
MESSAGE = re.compile(r"^(?P<name>[A-Za-z_]\w*): expected (?P<expected>.+), got (?P<got>.+)$", re.S)


# ================================================================ the test (parent process)


def test_fuzz_public_api(tmp_path):
    summary = Path(os.environ.get("LCNUMBA_FUZZ_SUMMARY") or tmp_path / "fuzz_summary.json")
    progress = tmp_path / "fuzz_progress.txt"
    command = [sys.executable, __file__, "--examples", str(EXAMPLES), "--summary", str(summary),
               "--progress", str(progress)] + (["--random"] if RANDOM else [])
    proc = subprocess.run(command, capture_output=True, text=True, timeout=1200,
                          cwd=Path(__file__).resolve().parent.parent)
    if proc.returncode != 0 and not summary.is_file():
        last = progress.read_text().strip().splitlines()[-1:] if progress.is_file() else ["(none)"]
        pytest.fail(f"the fuzz child died with status {proc.returncode} (a negative status is the signal) "
                    f"during the case:\n{last[0]}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}")
    data = json.loads(summary.read_text())
    print(f"\nfuzz: {data['cases']} cases over {data['functions']} public functions, "
          f"{len(data['paths'])} distinct error paths, {data['seconds']:.1f} s")
    assert not data["failures"], "\n\n".join(data["failures"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert data["functions"] == len(_public_functions())
    assert data["cases"] >= 10 * data["functions"]
    # the error side is exercised: every kind of argument produces named errors
    named = {name for _, name, _ in data["paths"]}
    assert {"x", "w", "b", "dy", "out", "stride", "padding", "dilation", "groups", "tile_mode", "input_shape",
            "weight_shape", "bias_shape", "kernel_size", "indices", "centroids", "eps"} <= named, named


def _public_functions():
    import lcnumba

    return sorted(name for name in dir(lcnumba) if not name.startswith("_") and callable(getattr(lcnumba, name))
                  and not isinstance(getattr(lcnumba, name), type(np)))


# ================================================================ the cases (child process)

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
BAD_DTYPES = (np.int32, np.int64, np.bool_, np.float16, np.complex128, np.object_)
TOL = {np.dtype(np.float32): 2e-4, np.dtype(np.float64): 1e-9}

#: name: (sharing, spatial), the transposed families too
FAMILIES = {fam.name: (fam.sharing, fam.spatial) for fam in table.CONV_FAMILIES + table.TRANSPOSE_FAMILIES}
TRANSPOSED = {fam.name for fam in table.TRANSPOSE_FAMILIES}
PARTS = table.CONV_PASSES
INIT_FAMILIES = tuple(fam.name for fam in table.CONV_FAMILIES) + ("linear",)


class Call:
    """One call of a public function: its arguments (positional first), the spoilt one, and the oracle."""

    def __init__(self, fn_name, positional, keywords, *, mutation="none", allowed=(), expect=None, out_key=None,
                 compare=None):
        self.fn_name = fn_name
        self.compare = compare or _compare  # callable(call, result, expected)
        self.positional = list(positional)  # [(name, value)]
        self.keywords = dict(keywords)
        self.mutation = mutation
        self.allowed = set(allowed)
        self.expect = expect  # callable(call) -> expected result, or raises when the reference rejects the call
        self.out_key = out_key  # name of the keyword whose buffer must come back as the result

    def names(self):
        return [name for name, _ in self.positional] + list(self.keywords)

    def get(self, name):
        for key, value in self.positional:
            if key == name:
                return value
        return self.keywords.get(name)

    def set(self, name, value):
        for i, (key, _) in enumerate(self.positional):
            if key == name:
                self.positional[i] = (key, value)
                return
        self.keywords[name] = value

    def arrays(self):
        return {name: value for name, value in list(self.positional) + list(self.keywords.items())
                if isinstance(value, np.ndarray)}

    def __repr__(self):
        def show(value):
            if isinstance(value, np.ndarray):
                flags = "C" if value.flags.c_contiguous else ("F" if value.flags.f_contiguous else "strided")
                ro = "" if value.flags.writeable else ", read-only"
                bad = ""
                if value.dtype.kind == "f" and value.size and not np.all(np.isfinite(value)):
                    bad = ", with NaN/inf"
                return f"array{value.shape}:{value.dtype}[{flags}{ro}{bad}]"
            if isinstance(value, list) and len(value) > 6:
                return f"list(len {len(value)})"
            text = repr(value)
            return text if len(text) < 60 else text[:57] + "..."

        args = ", ".join(show(v) for _, v in self.positional)
        kwargs = ", ".join(f"{k}={show(v)}" for k, v in self.keywords.items())
        return f"{self.fn_name}({args}{', ' if kwargs else ''}{kwargs})  [mutation: {self.mutation}]"


def _error_path(exc):
    match = MESSAGE.match(str(exc))
    expected = match.group("expected") if match else str(exc)
    expected = re.sub(r"-?\d+(\.\d+)?(e[-+]?\d+)?", "#", expected)
    return (type(exc).__name__, match.group("name") if match else "?", expected[:60])


class Runner:
    """Runs calls, checks them against the oracle, counts cases and error paths."""

    def __init__(self, progress):
        self.progress = open(progress, "w", buffering=1) if progress else None
        self.cases = 0
        self.paths = set()

    def run(self, call):
        import lcnumba

        self.cases += 1
        if self.progress is not None:
            self.progress.write(f"{self.cases}: {call!r}\n")
        fn = getattr(lcnumba, call.fn_name)
        before = {name: (array.copy(), array.flags.writeable) for name, array in call.arrays().items()
                  if name not in ("out", "indices_out")}
        try:
            result = fn(*[v for _, v in call.positional], **call.keywords)
        except (TypeError, ValueError) as exc:
            self.paths.add(_error_path(exc))
            match = MESSAGE.match(str(exc))
            assert match, f"{call!r}\n{type(exc).__name__} message not of the form '<name>: expected ..., got ...': {exc}"
            name = match.group("name")
            assert name in inspect.signature(fn).parameters, \
                f"{call!r}\nthe message names {name!r}, which is no argument of the call: {exc}"
            assert call.mutation != "none", f"{call!r}\na valid call raised {type(exc).__name__}: {exc}"
            allowed = set(call.allowed)
            if not (call.mutation.endswith("of type") or " dtype " in call.mutation):
                # a shape or dtype that no longer fits may be reported as a mismatch of the given buffers
                allowed |= {k for k in ("out", "indices_out") if isinstance(call.get(k), np.ndarray)}
            assert name in allowed, \
                f"{call!r}\nthe message names {name!r}, expected one of {sorted(call.allowed)}: {exc}"
            return
        except MemoryError as exc:
            raise AssertionError(f"{call!r}\nMemoryError from an allocation, not a check: {exc!r}") from exc
        for name, (copy, writeable) in before.items():
            now = call.get(name)
            assert now.flags.writeable == writeable and np.array_equal(now, copy, equal_nan=copy.dtype.kind == "f"), \
                f"{call!r}\nthe input {name} was modified"
        if call.out_key is not None and call.get(call.out_key) is not None:
            assert result is call.get(call.out_key), f"{call!r}\nthe result is not the out= buffer"
        assert call.expect is not None, f"{call!r}\nreturned for a call that must fail"
        try:
            expected = call.expect(call)
        except (TypeError, ValueError) as exc:
            raise AssertionError(f"{call!r}\naccepted, but the reference rejects it: {exc}") from exc
        except MemoryError:
            # an empty batch with a huge geometry: nothing to compute, but the reference allocates
            # per-position weights; the result must then be empty
            results = result if isinstance(result, tuple) else (result,)
            assert all(isinstance(r, np.ndarray) and r.size == 0 for r in results if r is not None), \
                f"{call!r}\nthe reference runs out of memory on a call that returned non-empty results"
            return
        call.compare(call, result, expected)


def _compare(call, result, expected, what="result"):
    if isinstance(expected, _AnyShape):
        assert isinstance(result, tuple) and len(result) == expected.ndim and result[0] == expected[0] \
            and all(type(r) is int and r >= 1 for r in result[1:]), f"{call!r}\n{what}: {result!r}"
        return
    if expected is None or isinstance(expected, (bool, int, np.integer)):
        assert result == expected, f"{call!r}\n{what}: {result!r} != {expected!r}"
        return
    if isinstance(expected, tuple) and not isinstance(expected, np.ndarray):
        if all(isinstance(e, (int, np.integer)) for e in expected):
            assert tuple(result) == expected and all(type(r) is int for r in result), \
                f"{call!r}\n{what}: {result!r} != {expected!r}"
            return
        assert isinstance(result, tuple) and len(result) == len(expected), f"{call!r}\n{what}: {type(result)}"
        for i, (r, e) in enumerate(zip(result, expected)):
            _compare(call, r, e, f"{what}[{i}]")
        return
    assert isinstance(result, np.ndarray), f"{call!r}\n{what}: {type(result).__name__}, not an ndarray"
    assert result.shape == expected.shape, f"{call!r}\n{what}: shape {result.shape} != {expected.shape}"
    assert result.dtype == expected.dtype, f"{call!r}\n{what}: dtype {result.dtype} != {expected.dtype}"
    if result.dtype.kind in "iu":
        assert np.array_equal(result, expected), f"{call!r}\n{what}: integer results differ"
        return
    nan_r, nan_e = np.isnan(result), np.isnan(expected)
    if call.fn_name.endswith("_backward") and "vlad" in call.fn_name and _non_finite_inputs(call):
        # NaN or inf inputs make the forward NaN; the reference's gradient then keeps some finite
        # values (its clamped-norm branch), the kernels' is NaN: NaN must cover the reference's
        assert not np.any(nan_e & ~nan_r), f"{call!r}\n{what}: finite where the reference is NaN"
        both = ~nan_r & ~nan_e
        result, expected = result[both], expected[both]
        nan_r = nan_e = np.zeros(result.shape, bool)
    assert np.array_equal(nan_r, nan_e), f"{call!r}\n{what}: NaN at {np.argwhere(nan_r != nan_e)[:5].tolist()}"
    inf_r, inf_e = np.isinf(result), np.isinf(expected)
    assert np.array_equal(inf_r, inf_e) and np.array_equal(result[inf_r], expected[inf_e]), \
        f"{call!r}\n{what}: inf at different places"
    fin = np.isfinite(expected)
    if fin.any():
        tol = TOL[result.dtype] * (1 if call.fn_name.startswith(("conv", "tiled", "local", "max")) else 10)
        scale = max(1.0, float(np.abs(expected[fin]).max()))
        err = float(np.abs(result[fin].astype(np.float64) - expected[fin].astype(np.float64)).max())
        assert err <= tol * scale, f"{call!r}\n{what}: max error {err:.3g} > {tol * scale:.3g}"


# ---------------------------------------------------------------- building valid arrays


def _non_finite_inputs(call):
    return any(a.dtype.kind == "f" and not np.all(np.isfinite(a)) for a in call.arrays().values())


def _values(draw, st, shape, dtype, *, special=True):
    """Random values; sometimes with NaN, inf or -inf cells."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(shape).astype(dtype)
    if special and values.size and draw(st.integers(0, 9)) == 0:
        cells = rng.integers(0, values.size, size=1 + values.size // 8)
        values.flat[cells] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return values


def _layout(draw, st, array, readonly=False):
    """The same values as C-contiguous, Fortran, strided or read-only arrays (all valid inputs).

    Numba compiles a kernel apart for every combination of read-only arguments (seconds each, then
    cached), so only the argument given ``readonly=True`` (one per kernel) is ever made read-only.
    """
    kind = draw(st.sampled_from(["c", "c", "c", "f", "strided"] + (["readonly"] if readonly else [])))
    if kind == "f":
        return np.asfortranarray(array)
    if kind == "strided":
        big = np.empty(array.shape[:-1] + (2 * array.shape[-1],), array.dtype) if array.ndim else array.copy()
        if array.ndim:
            big[..., ::2] = array
            return big[..., ::2]
        return big
    if kind == "readonly":
        array = array.copy()
        array.flags.writeable = False
    return array


# ---------------------------------------------------------------- spoiling one argument


class Spoilers:
    """Ways to spoil an argument, by the argument's kind; each returns (value, label, allowed names)."""

    def __init__(self, draw, st, call, related):
        self.draw, self.st, self.call, self.related = draw, st, call, set(related)

    def pick(self, options):
        return self.draw(self.st.sampled_from(options))

    def array(self, name, value, *, floats=(), optional=False):
        kinds = ["type", "dtype", "ndim", "shape", "zero"]
        if value.dtype.kind == "f" and floats:
            kinds.append("float")
        kind = self.pick(kinds)
        if kind == "type":
            options = [value.tolist(), 1.0, "x", object(), (1, 2)]
            if not optional:
                options.append(None)
            return self.pick(options), f"{name} of type", {name}
        if kind == "dtype":
            dtype = self.pick([d for d in BAD_DTYPES if np.dtype(d) != value.dtype] + ([np.float64] if value.dtype.kind == "i" else []))
            return value.astype(dtype), f"{name} dtype {np.dtype(dtype)}", {name}
        if kind == "float":
            other = FLOATS[1] if value.dtype == FLOATS[0] else FLOATS[0]
            return value.astype(other), f"{name} the other float dtype", set(floats)
        if kind == "ndim":
            if value.ndim and self.draw(self.st.booleans()):
                fewer = value[..., 0] if value.shape[-1] else np.zeros(value.shape[:-1], value.dtype)
                return fewer, f"{name} one axis fewer", {name} | self.related
            return value[..., None], f"{name} one axis more", {name} | self.related
        if value.ndim == 0:
            return value[None], f"{name} 1-D", {name}
        axis = self.draw(self.st.integers(0, value.ndim - 1))
        shape = list(value.shape)
        if kind == "zero":
            shape[axis] = 0
            label = f"{name} axis {axis} empty"
        else:
            shape[axis] = max(0, shape[axis] + self.pick([-1, 1]))
            label = f"{name} axis {axis} off by one"
        spoilt = np.resize(value, shape) if value.size else np.zeros(shape, value.dtype)
        return spoilt.astype(value.dtype), label, {name} | self.related

    def shape(self, name, value):
        kind = self.pick(["type", "length", "negative", "off", "float", "bool", "huge"])
        value = tuple(value)
        if kind == "type":
            return self.pick([None, 3, "shape", np.array(value), {0: 1}]), f"{name} of type", {name}
        if kind == "length":
            return (value + (1,)) if self.draw(self.st.booleans()) or not value else value[:-1], \
                f"{name} length", {name}
        i = self.draw(self.st.integers(0, len(value) - 1))
        items = list(value)
        if kind == "negative":
            items[i] = -1 - self.draw(self.st.integers(0, 3))
            return tuple(items), f"{name}[{i}] negative", {name}
        if kind == "float":
            items[i] = float(items[i])
            return tuple(items), f"{name}[{i}] float", {name}
        if kind == "bool":
            items[i] = True
            return tuple(items), f"{name}[{i}] bool", {name}
        if kind == "huge":
            items[i] = self.pick([2**31, 2**40, 2**62, 2**63, 2**70])
            return tuple(items), f"{name}[{i}] huge", {name, "out"} | self.related
        items[i] = max(0, items[i] + self.pick([-1, 1]))
        return tuple(items), f"{name}[{i}] off by one", {name} | self.related

    def integer(self, name, value, *, pairs=2, minimum=1):
        options = [minimum - 1, minimum - 2, True, 1.5, "1", None, 2**63, 2**70, np.float64(1.0),
                   (1,) * (pairs + 1), [1] * (pairs + 1), (1.0,) * pairs, (minimum - 1,) * pairs]
        if pairs == 2:
            options.append((1,))
        spoilt = self.pick(options)
        return spoilt, f"{name}={spoilt!r}", {name} | self.related

    def flag(self, name):
        spoilt = self.pick([1, 0, "yes", None, 1.0, np.array(True)])
        return spoilt, f"{name}={spoilt!r}", {name}

    def choice(self, name):
        spoilt = self.pick(["bogus", None, 1, "PERIODIC", ""])
        return spoilt, f"{name}={spoilt!r}", {name}

    def out(self, name, shape, dtype, inputs):
        kinds = ["type", "dtype", "shape", "ndim", "readonly", "overlap", "strided"]
        if len([s for s in shape if s > 1]) >= 2:
            kinds.append("fortran")
        kind = self.pick(kinds)
        if kind == "type":
            return self.pick([np.zeros(shape, dtype).tolist(), 0.0, "out", (1,)]), f"{name} of type", {name}
        if kind == "dtype":
            other = self.pick([d for d in FLOATS + (np.dtype(np.int64), np.dtype(np.float16)) if d != dtype])
            return np.zeros(shape, other), f"{name} dtype {other}", {name}
        if kind == "shape":
            if not shape:
                return np.zeros((1,), dtype), f"{name} shape", {name}
            axis = self.draw(self.st.integers(0, len(shape) - 1))
            bad = list(shape)
            bad[axis] += self.pick([-1, 1]) if bad[axis] > 0 else 1
            return np.zeros(bad, dtype), f"{name} shape off by one", {name}
        if kind == "ndim":
            return np.zeros(tuple(shape) + (1,), dtype), f"{name} one axis more", {name}
        if kind == "readonly":
            buf = np.zeros(shape, dtype)
            buf.flags.writeable = False
            return buf, f"{name} read-only", {name}
        if kind == "fortran":
            return np.asfortranarray(np.zeros(shape, dtype)), f"{name} Fortran order", {name}
        if kind == "strided":
            size = int(np.prod(shape))
            if size < 2:
                return np.zeros(tuple(shape) + (1,), dtype), f"{name} one axis more", {name}
            buf = np.zeros(2 * size, dtype)[::2].reshape(shape) if len(shape) == 1 else \
                np.zeros(tuple(shape[:-1]) + (2 * shape[-1],), dtype)[..., ::2]
            return buf, f"{name} strided", {name}
        # overlap: a view into the memory of one of the inputs
        candidates = [(k, a) for k, a in inputs.items() if isinstance(a, np.ndarray) and a.dtype == dtype
                      and a.flags.c_contiguous and a.flags.writeable and a.size >= max(1, int(np.prod(shape)))]
        size = int(np.prod(shape))
        if not candidates or size == 0:
            return np.zeros(tuple(shape) + (1,), dtype), f"{name} one axis more", {name}
        key, array = self.pick(candidates)
        return array.reshape(-1)[array.size - size:].reshape(shape), f"{name} overlaps {key}", {name}


# ---------------------------------------------------------------- the convolution family


def _conv_geometry(draw, st, spatial):
    groups = draw(st.integers(1, 3))
    cg, fg = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    n = draw(st.sampled_from([0, 1, 1, 2, 3]))
    if spatial == 2:
        kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    else:
        kh = sh = dh = 1
        kw, sw, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
    same_ok = (sh, sw) == (1, 1)
    form = draw(st.sampled_from(["int", "pair", "pairs", "valid", "same"] if same_ok else ["int", "pair", "pairs", "valid"]))
    p = [draw(st.integers(0, 2)) for _ in range(4)]
    if spatial == 2:
        padding = {"int": p[0], "pair": (p[0], p[1]), "pairs": ((p[0], p[2]), (p[1], p[3])),
                   "valid": "valid", "same": "same"}[form]
        stride, dilation = draw(st.sampled_from([(sh, sw), [sh, sw]] + ([sh] if sh == sw else []))), \
            ((dh, dw) if dh != dw or draw(st.booleans()) else dh)
    else:
        padding = {"int": p[0], "pair": (p[0],), "pairs": (p[0], p[2]), "valid": "valid", "same": "same"}[form]
        stride = draw(st.sampled_from([sw, (sw,), np.int64(sw)]))
        dilation = draw(st.sampled_from([dw, (dw,)]))
    return groups, cg, fg, n, (kh, kw), (sh, sw), (dh, dw), padding, stride, dilation


def conv_call(draw, st, family, part, spoil=True):
    from lcnumba import geometry, testing

    sharing, spatial = FAMILIES[family]
    groups, cg, fg, n, (kh, kw), (sh, sw), (dh, dw), padding, stride, dilation = _conv_geometry(draw, st, spatial)
    c, f = groups * cg, groups * fg
    dtype = draw(st.sampled_from(FLOATS))
    pad2 = geometry.padding1d(padding) if spatial == 1 else padding
    pt, pl, pb, pr = geometry.padding4(pad2, (kh, kw), (sh, sw), (dh, dw))
    tile_mode = draw(st.sampled_from(["periodic", "block"])) if sharing == "tiled" else None
    tile_grid = None
    if sharing == "tiled":
        tile_grid = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if spatial == 2 else (draw(st.integers(1, 4)),)
    params = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    if family in TRANSPOSED:
        # (N, C, H, W) -> (N, F, OH, OW), OH = (H-1)*SH - PT - PB + DH*(KH-1) + output_padding + 1 >= 1
        eh = 0 if spatial == 1 else draw(st.integers(0, max(sh, dh) - 1))
        ew = draw(st.integers(0, max(sw, dw) - 1))
        spellings = [ew] if spatial == 1 else [(eh, ew)] + ([eh] if eh == ew else [])
        params["output_padding"] = draw(st.sampled_from(spellings))
        need_h = max(1, -(-(pt + pb - dh * (kh - 1) - eh) // sh) + 1)
        need_w = max(1, -(-(pl + pr - dw * (kw - 1) - ew) // sw) + 1)
        h = 1 if spatial == 1 else draw(st.integers(need_h, need_h + 3))
        w = draw(st.integers(need_w, need_w + 4))
        oh = 1 if spatial == 1 else (h - 1) * sh - pt - pb + dh * (kh - 1) + eh + 1
        ow = (w - 1) * sw - pl - pr + dw * (kw - 1) + ew + 1
        inputs, outputs = (h, w), (oh, ow)
        c, f = groups * cg, groups * fg
        bank = (c, fg, kh, kw) if spatial == 2 else (c, fg, kw)
    else:
        need_h = max(0, dh * (kh - 1) + 1 - pt - pb)
        need_w = max(0, dw * (kw - 1) + 1 - pl - pr)
        h = 1 if spatial == 1 else draw(st.integers(max(need_h, 1 if need_h == 0 and draw(st.booleans()) else 0),
                                                    need_h + 4))
        w = draw(st.integers(need_w, need_w + 5))
        oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
        ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
        inputs = outputs = (oh, ow)  # a local weight and bias are both per output position
        bank = (f, cg, kh, kw) if spatial == 2 else (f, cg, kw)
    axes = slice(2 - spatial, 2)
    grid = {"shared": (), "tiled": tile_grid, "local": inputs[axes]}[sharing]
    b_grid = {"shared": (), "tiled": tile_grid, "local": outputs[axes]}[sharing]
    x_shape = (n, c, h, w) if spatial == 2 else (n, c, w)
    y_shape = (n, f, oh, ow) if spatial == 2 else (n, f, ow)
    w_shape, b_shape = grid + bank, (f,) + b_grid

    x = _layout(draw, st, _values(draw, st, x_shape, dtype), readonly=True)
    wt = _layout(draw, st, _values(draw, st, w_shape, dtype))
    has_bias = draw(st.booleans())
    b = _layout(draw, st, _values(draw, st, b_shape, dtype)) if has_bias else None
    dy = _layout(draw, st, _values(draw, st, y_shape, dtype))
    if tile_mode is not None and (tile_mode == "block" or draw(st.booleans())):
        params["tile_mode"] = tile_mode
    fn = f"{family}_{part}"
    ref = getattr(testing, fn)
    accumulate = False

    if part == "forward":
        positional = [("x", x), ("w", wt), ("b", b)]
        keywords = dict(params)
        out_shape = y_shape
    elif part == "backward_input":
        positional = [("dy", dy), ("w", wt), ("input_shape", x_shape)]
        keywords = dict(params)
        out_shape = x_shape
    elif part == "backward_weight":
        positional = [("dy", dy), ("x", x), ("weight_shape", w_shape)]
        keywords = dict(params)
        out_shape = w_shape
    elif part == "backward_bias":
        positional = [("dy", dy), ("bias_shape", b_shape)]
        keywords = {k: v for k, v in params.items() if k == "tile_mode"}
        out_shape = b_shape
    else:
        positional = [("dy", dy), ("x", x), ("w", wt), ("b", b)]
        keywords = dict(params)
        out_shape = None
    out_key = None
    if out_shape is not None and draw(st.booleans()):
        out_key = "out"
        keywords["out"] = _values(draw, st, out_shape, dtype, special=False)
        if part in ("backward_weight", "backward_bias") and draw(st.booleans()):
            keywords["accumulate"] = accumulate = True

    def expect(call):
        positional_values = [v for _, v in call.positional]
        kwargs = {k: v for k, v in call.keywords.items() if k not in ("out", "accumulate", "stream")}
        expected = ref(*positional_values, **kwargs)
        if call.keywords.get("accumulate") is True:
            expected = (start + expected).astype(expected.dtype)
        return expected

    start = keywords["out"].copy() if accumulate else None
    call = Call(fn, positional, keywords, expect=expect, out_key=out_key)
    related = {name for name in call.names() if name not in ("accumulate", "tile_mode")}
    if spoil:
        _spoil_conv(draw, st, call, part, related, out_shape, dtype, spatial, sh, sw)
    return call


def _spoil_conv(draw, st, call, part, related, out_shape, dtype, spatial, sh, sw):
    if draw(st.integers(0, 6)) == 0:
        return  # a valid call
    sp = Spoilers(draw, st, call, related)
    floats = [name for name in ("x", "w", "b", "dy") if isinstance(call.get(name), np.ndarray)]
    floats += ["out"] if isinstance(call.get("out"), np.ndarray) else []  # its dtype follows the inputs'
    targets = [name for name in call.names() if name != "stream" and call.get(name) is not None]
    targets += ["accumulate"] if part in ("backward_weight", "backward_bias") else []
    targets += ["out"] if out_shape is not None else []
    name = draw(st.sampled_from(sorted(set(targets))))
    value = call.get(name)
    if name in ("x", "w", "b", "dy"):
        spoilt, label, allowed = sp.array(name, value, floats=floats, optional=(name == "b"))
    elif name in ("input_shape", "weight_shape", "bias_shape"):
        spoilt, label, allowed = sp.shape(name, value)
    elif name in ("stride", "dilation"):
        spoilt, label, allowed = sp.integer(name, value, pairs=spatial)
    elif name == "groups":
        spoilt = draw(st.sampled_from([0, -1, 2.0, True, "2", None, 2**63, 7, 5]))
        label, allowed = f"groups={spoilt!r}", {"groups"} | related
    elif name == "padding":
        options = [-1, "bogus", "SAME", 1.5, None, (1, 2, 3), ((1, 2), (3,)), ((1, 2), 3), (-1, 0), True,
                   2**62, 10**6, [[0, 0], [0, -1]]]
        if (sh, sw) != (1, 1):
            options.append("same")
        spoilt = draw(st.sampled_from(options))
        label, allowed = f"padding={spoilt!r}", {"padding", "out"} | related
    elif name == "output_padding":
        spoilt = draw(st.sampled_from([-1, 1.5, None, "1", (1, 2, 3), True, 7, 2**62]))
        label, allowed = f"output_padding={spoilt!r}", {"output_padding", "out"} | related
    elif name == "tile_mode":
        spoilt, label, allowed = sp.choice(name)
    elif name == "accumulate":
        if call.get("out") is None and draw(st.booleans()):
            spoilt, label, allowed = True, "accumulate without out", {"accumulate", "out"}
        else:
            spoilt, label, allowed = sp.flag(name)
    elif name == "out":
        spoilt, label, allowed = sp.out(name, out_shape, dtype, call.arrays())
        call.keywords.pop("accumulate", None)
    else:
        raise AssertionError(name)
    call.set(name, spoilt)
    call.mutation = label
    call.allowed = allowed


class _AnyShape(tuple):
    """Stands for an output shape whose spatial sizes are not computed by a reference."""

    def __new__(cls, n, ndim):
        self = super().__new__(cls, (n,))
        self.ndim = ndim
        return self


def conv_query_call(draw, st, family):
    """``*_output_shape``: the shape of the reference forward of zero arrays."""
    from lcnumba import testing

    probe = conv_call(draw, st, family, "forward", spoil=False)
    x, w = probe.get("x"), probe.get("w")
    sharing, spatial = FAMILIES[family]
    params = {k: v for k, v in probe.keywords.items()
              if k in ("stride", "padding", "output_padding", "dilation", "groups")}
    fn = f"{family}_output_shape"
    by_kernel = sharing == "local" and family not in TRANSPOSED  # local_conv*d_output_shape takes the kernel
    if by_kernel:
        bank = w.shape[-4:] if spatial == 2 else w.shape[-3:]
        kernel = tuple(bank[2:]) if spatial == 2 else bank[2]
        positional = [("input_shape", x.shape), ("kernel_size", kernel), ("filters", bank[0])]
    else:
        positional = [("input_shape", x.shape), ("weight_shape", w.shape)]

    def expect(call):
        shape = call.get("input_shape")
        if by_kernel:
            kernel = call.get("kernel_size")
            kernel = (kernel,) if spatial == 1 else tuple(kernel)
            w_shape = (call.get("filters"), shape[1] // call.keywords["groups"]) + kernel
            ref = getattr(testing, "conv2d_forward" if spatial == 2 else "conv1d_forward")
        else:
            w_shape = call.get("weight_shape")
            ref = getattr(testing, f"{family}_forward")
        if min(tuple(shape) + tuple(w_shape)) < 0:
            raise ValueError("shapes: expected sizes >= 0, got others")
        if max(tuple(shape) + tuple(w_shape)) > 64:  # too big to allocate: the reference on a small batch
            small = (min(shape[0], 1),) + tuple(shape[1:])
            small_w = ((1, 1) + tuple(w_shape[2:])) if sharing == "tiled" and spatial == 2 else \
                ((1,) + tuple(w_shape[1:])) if sharing == "tiled" else tuple(w_shape)
            if max(small + small_w) > 64:
                return _AnyShape(shape[0], len(shape))
            ys = ref(np.zeros(small), np.zeros(small_w), **call.keywords).shape
            return (shape[0],) + tuple(int(s) for s in ys[1:])
        y = ref(np.zeros(shape), np.zeros(w_shape), **call.keywords)
        return tuple(int(s) for s in y.shape)

    call = Call(fn, positional, params, expect=expect)
    if draw(st.integers(0, 4)):
        related = set(call.names())
        sp = Spoilers(draw, st, call, related)
        name = draw(st.sampled_from(call.names()))
        value = call.get(name)
        if name in ("input_shape", "weight_shape"):
            spoilt, label, allowed = sp.shape(name, value)
        elif name == "kernel_size":
            spoilt, label, allowed = sp.integer(name, value, pairs=spatial)
        elif name == "filters":
            spoilt = draw(st.sampled_from([0, -1, 1.0, None, "2", True]))
            label, allowed = f"filters={spoilt!r}", {"filters"}
        elif name in ("stride", "dilation"):
            spoilt, label, allowed = sp.integer(name, value, pairs=spatial)
        elif name == "groups":
            spoilt = draw(st.sampled_from([0, -1, 2.0, True, 7]))
            label, allowed = f"groups={spoilt!r}", {"groups"} | related
        elif name == "output_padding":
            spoilt = draw(st.sampled_from([-1, 1.5, None, (1, 2, 3), 7]))
            label, allowed = f"output_padding={spoilt!r}", {"output_padding"} | related
        else:  # padding
            spoilt = draw(st.sampled_from([-1, "bogus", 1.5, None, (1, 2, 3)]))
            label, allowed = f"padding={spoilt!r}", {"padding"}
        call.set(name, spoilt)
        call.mutation, call.allowed = label, allowed
    return call


# ---------------------------------------------------------------- max-pooling


def _pool_reference(ref):
    """The reference pooling with 1-tuples spelt as ints (the reference takes ints only in 1-D)."""
    def one(value):
        return value[0] if isinstance(value, tuple) and len(value) == 1 else value

    def call(x, kernel_size, **kwargs):
        return ref(x, one(kernel_size), **{k: one(v) for k, v in kwargs.items()})

    return call


def _empty_batch_pool_backward(ref):
    """The reference backward, answering an empty batch (which it cannot reshape) with zeros."""
    def call(dy, indices, input_shape):
        if dy.ndim >= 2 and dy.shape[0] * dy.shape[1] == 0 and tuple(input_shape[:2]) == dy.shape[:2] \
                and np.shape(indices) == dy.shape and min(input_shape) >= 0:
            return np.zeros(tuple(input_shape), dy.dtype)
        return ref(dy, indices, input_shape)

    return call


def _pool_geometry(draw, st, spatial):
    ks = [draw(st.integers(1, 4)) for _ in range(spatial)]
    ss = [draw(st.integers(1, 3)) for _ in range(spatial)]
    ds = [draw(st.integers(1, 2)) for _ in range(spatial)]
    ps = [draw(st.integers(0, k // 2)) for k in ks]
    sizes = []
    for k, p, d in zip(ks, ps, ds):
        need = max(1, d * (k - 1) + 1 - 2 * p)
        sizes.append(draw(st.integers(need, need + 5)))
    return ks, ss, ds, ps, sizes


def pool_call(draw, st, spatial, part):
    from lcnumba import testing

    ks, ss, ds, ps, sizes = _pool_geometry(draw, st, spatial)
    n, c = draw(st.integers(0, 2)), draw(st.integers(1, 3))
    dtype = draw(st.sampled_from(FLOATS))
    one = spatial == 1

    def spell(values):
        if one:
            return draw(st.sampled_from([values[0], (values[0],)]))
        return tuple(values) if values[0] != values[1] or draw(st.booleans()) else values[0]

    params = dict(stride=None if draw(st.integers(0, 3)) == 0 else spell(ss), padding=spell(ps),
                  dilation=spell(ds), ceil_mode=draw(st.booleans()))
    kernel = spell(ks)
    x_shape = (n, c) + tuple(sizes)
    levels = draw(st.sampled_from([None, 3]))
    x = _values(draw, st, x_shape, dtype)
    if levels:
        x = np.round(x).astype(dtype)  # ties
    x = _layout(draw, st, x, readonly=True)
    name = f"max_pool{spatial}d"
    ref_fwd = _pool_reference(getattr(testing, f"{name}_forward"))
    if part == "forward":
        return_indices = draw(st.booleans())
        keywords = dict(params, return_indices=return_indices)
        y_shape = ref_fwd(x, kernel, **params).shape
        out_key = None
        if draw(st.booleans()):
            keywords["out"] = np.full(y_shape, 7, dtype)
            out_key = "out"
        if return_indices and draw(st.booleans()):
            keywords["indices_out"] = np.full(y_shape, 7, np.int64)

        def expect(call):
            kw = {k: v for k, v in call.keywords.items() if k not in ("out", "indices_out", "stream")}
            return ref_fwd(call.get("x"), call.get("kernel_size"), **kw)

        call = Call(f"{name}_forward", [("x", x), ("kernel_size", kernel)], keywords, expect=expect,
                    out_key=out_key if not return_indices else None)
        _spoil_pool(draw, st, call, spatial, y_shape, dtype)
        return call
    y, idx = ref_fwd(x, kernel, return_indices=True, **params)
    if draw(st.integers(0, 3)) == 0 and y.size:  # any valid cell, or -1, is accepted
        plane = int(np.prod(sizes))
        idx = np.random.default_rng(draw(st.integers(0, 99))).integers(-1, plane, size=idx.shape)
    dy = _layout(draw, st, _values(draw, st, y.shape, dtype), readonly=True)
    idx = _layout(draw, st, idx)
    ref_bwd = _empty_batch_pool_backward(getattr(testing, f"{name}_backward"))
    keywords = {}
    if draw(st.booleans()):
        keywords["out"] = np.full(x_shape, 7, dtype)

    def expect(call):
        return ref_bwd(call.get("dy"), call.get("indices"), call.get("input_shape"))

    call = Call(f"{name}_backward", [("dy", dy), ("indices", idx), ("input_shape", x_shape)], keywords,
                expect=expect, out_key="out")
    if draw(st.integers(0, 5)):
        related = {"dy", "indices", "input_shape"}
        sp = Spoilers(draw, st, call, related)
        target = draw(st.sampled_from(["dy", "indices", "input_shape", "out", "range"]))
        if target == "dy":
            spoilt, label, allowed = sp.array("dy", dy, floats=["dy"])
        elif target == "indices":
            spoilt, label, allowed = sp.array("indices", idx)
        elif target == "input_shape":
            spoilt, label, allowed = sp.shape("input_shape", x_shape)
        elif target == "out":
            spoilt, label, allowed = sp.out("out", x_shape, dtype, call.arrays())
        else:
            if not idx.size:
                return call
            spoilt = np.array(idx)
            spoilt.flat[draw(st.integers(0, idx.size - 1))] = draw(st.sampled_from([-2, int(np.prod(sizes)), 2**62, -2**63]))
            target, label, allowed = "indices", "an index out of range", {"indices"}
        call.set(target, spoilt)
        call.mutation, call.allowed = label, allowed
    return call


def _spoil_pool(draw, st, call, spatial, y_shape, dtype):
    if draw(st.integers(0, 5)) == 0:
        return
    related = {"x", "kernel_size", "stride", "padding", "dilation"}
    sp = Spoilers(draw, st, call, related)
    target = draw(st.sampled_from(["x", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                                   "return_indices", "out", "indices_out", "big_kernel", "big_padding"]))
    x = call.get("x")
    if target == "x":
        spoilt, label, allowed = sp.array("x", x, floats=["x"])
    elif target in ("kernel_size", "stride", "dilation"):
        spoilt, label, allowed = sp.integer(target, call.get(target), pairs=spatial)
        allowed |= {"padding"}
    elif target == "padding":
        spoilt, label, allowed = sp.integer(target, call.get(target), pairs=spatial, minimum=0)
    elif target in ("ceil_mode", "return_indices"):
        spoilt, label, allowed = sp.flag(target)
    elif target == "out":
        spoilt, label, allowed = sp.out("out", y_shape, dtype, call.arrays())
    elif target == "indices_out":
        if call.keywords.get("return_indices"):
            spoilt, label, allowed = sp.out("indices_out", y_shape, np.dtype(np.int64), call.arrays())
        else:
            spoilt, label, allowed = np.zeros(y_shape, np.int64), "indices_out without return_indices", {"indices_out"}
    elif target == "big_kernel":
        size = max(x.shape[2:]) if isinstance(x, np.ndarray) else 4
        target, spoilt = "kernel_size", (size + 3 if spatial == 1 else (size + 3, size + 3))
        call.keywords["padding"] = 0
        label, allowed = "a kernel larger than the input", {"kernel_size"}
    else:
        k = call.get("kernel_size")
        k = k if isinstance(k, int) else k[0]
        target, spoilt = "padding", k // 2 + 1
        label, allowed = "padding over half the kernel", {"padding"}
    call.set(target, spoilt)
    call.mutation, call.allowed = label, allowed


def pool_query_call(draw, st, spatial):
    from lcnumba import testing

    ks, ss, ds, ps, sizes = _pool_geometry(draw, st, spatial)
    shape = (draw(st.integers(0, 2)), draw(st.integers(1, 3))) + tuple(sizes)
    pick = (lambda v: v[0]) if spatial == 1 else tuple
    keywords = dict(stride=pick(ss), padding=pick(ps), dilation=pick(ds), ceil_mode=draw(st.booleans()))
    ref = _pool_reference(getattr(testing, f"max_pool{spatial}d_forward"))

    def expect(call):
        shape = call.get("input_shape")
        if min(shape) < 0:
            raise ValueError("input_shape: expected sizes >= 0, got others")
        if max(shape) > 64:
            if max(shape[2:]) > 64:
                return _AnyShape(shape[0], len(shape))
            small = (min(shape[0], 1), min(shape[1], 1)) + tuple(shape[2:])
            ys = ref(np.zeros(small), call.get("kernel_size"), **call.keywords).shape
            return tuple(shape[:2]) + tuple(int(s) for s in ys[2:])
        return tuple(int(s) for s in ref(np.zeros(shape), call.get("kernel_size"), **call.keywords).shape)

    call = Call(f"max_pool{spatial}d_output_shape", [("input_shape", shape), ("kernel_size", pick(ks))], keywords,
                expect=expect)
    if draw(st.integers(0, 3)):
        sp = Spoilers(draw, st, call, {"input_shape", "kernel_size", "stride", "padding", "dilation"})
        target = draw(st.sampled_from(["input_shape", "kernel_size", "stride", "padding", "dilation", "ceil_mode"]))
        if target == "input_shape":
            spoilt, label, allowed = sp.shape(target, shape)
        elif target == "ceil_mode":
            spoilt, label, allowed = sp.flag(target)
        else:
            spoilt, label, allowed = sp.integer(target, call.get(target), pairs=spatial,
                                                minimum=0 if target == "padding" else 1)
            allowed |= {"padding", "kernel_size"}
        call.set(target, spoilt)
        call.mutation, call.allowed = label, allowed
    return call


# ---------------------------------------------------------------- NetVLAD


def netvlad_call(draw, st, part):
    from lcnumba import testing

    dtype = draw(st.sampled_from(FLOATS))
    n, d, k, g = draw(st.integers(0, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(0, 2))
    spatial = draw(st.sampled_from([(draw(st.integers(1, 6)),), (draw(st.integers(1, 3)), draw(st.integers(1, 3)))]))
    x = _layout(draw, st, _values(draw, st, (n, d) + spatial, dtype), readonly=True)
    w = _layout(draw, st, _values(draw, st, (k + g, d), dtype))
    b = _values(draw, st, (k + g,), dtype)
    if draw(st.integers(0, 4)) == 0:
        b[draw(st.integers(0, k + g - 1))] = -1e4  # a cluster that gets no mass
    b = _layout(draw, st, b)
    c = _layout(draw, st, _values(draw, st, (k, d), dtype))
    keywords = _vlad_switches(draw, st)
    if draw(st.booleans()):
        keywords["normalize_input"] = draw(st.booleans())
    if draw(st.integers(0, 2)) == 0:
        mask = np.random.default_rng(draw(st.integers(0, 99))).random((n,) + spatial) < 0.6
        mask = mask.reshape(n, int(np.prod(spatial))) if draw(st.booleans()) else mask
        keywords["mask"] = mask.astype(draw(st.sampled_from([np.bool_, np.int32, np.uint8, np.int64])))
    floats = ["x", "w", "b", "centroids"]
    if part == "forward":
        positional = [("x", x), ("w", w), ("b", b), ("centroids", c)]
        out_key = None
        if draw(st.booleans()):
            keywords["out"] = np.full((n, k * d), 7, dtype)
            out_key = "out"
    else:
        dy = _layout(draw, st, _values(draw, st, (n, k * d), dtype))
        positional = [("dy", dy), ("x", x), ("w", w), ("b", b), ("centroids", c)]
        floats.insert(0, "dy")
        out_key = None
    ref = getattr(testing, f"netvlad_{part}")

    def expect(call):
        args = [v for _, v in call.positional]
        kwargs = {k: v for k, v in call.keywords.items() if k not in ("out", "stream")}
        if not all(isinstance(a, np.ndarray) and a.ndim for a in args) or args[0].shape[0]:
            return ref(*args, **kwargs)
        if isinstance(kwargs.get("mask"), np.ndarray):
            kwargs["mask"] = np.ones((1,) + kwargs["mask"].shape[1:], bool)
        return _empty_batch_reference(ref, args, kwargs, len(args) - 3, part)

    call = Call(f"netvlad_{part}", positional, keywords, expect=expect, out_key=out_key)
    if draw(st.integers(0, 5)):
        related = set(floats)
        sp = Spoilers(draw, st, call, related)
        targets = floats + ["normalize_input", "intra_normalize", "final_normalize", "mask", "eps"] + \
            (["out"] if part == "forward" else [])
        target = draw(st.sampled_from(targets))
        if target == "mask":
            spoilt, label, allowed = _spoilt_mask(draw, st, n, spatial)
            allowed |= {"x"}
        else:
            spoilt, label, allowed = _spoil_vlad(sp, draw, st, call, target, floats, (n, k * d), dtype)
        call.set(target, spoilt)
        call.mutation, call.allowed = label, allowed
    return call


def _vlad_switches(draw, st):
    """Keywords of NetVLAD's normalisation switches, sometimes given, sometimes left to their defaults."""
    keywords = {}
    for name in ("intra_normalize", "final_normalize"):
        if draw(st.integers(0, 2)) == 0:
            keywords[name] = draw(st.booleans())
    if draw(st.integers(0, 3)) == 0:
        keywords["eps"] = draw(st.sampled_from([1e-6, 1e-3, 1.0, 1e-30]))
    return keywords


def _spoil_vlad(sp, draw, st, call, target, floats, out_shape, dtype):
    """Spoil an array, a bool switch, ``eps`` or ``out`` of a NetVLAD-family call."""
    if target in floats:
        return sp.array(target, call.get(target), floats=floats)
    if target in ("normalize_input", "intra_normalize", "final_normalize", "whiten"):
        return sp.flag(target)
    if target == "eps":
        spoilt = draw(st.sampled_from([0.0, -1e-12, float("nan"), float("inf"), "1e-12", None, True, 0]))
        return spoilt, f"eps={spoilt!r}", {"eps"}
    return sp.out("out", out_shape, dtype, call.arrays())


def _spoilt_mask(draw, st, n, spatial):
    """A mask that is not one: of floats, of the wrong shape, or not an array."""
    kind = draw(st.sampled_from(["float", "shape", "type"]))
    if kind == "float":
        return np.ones((n,) + spatial, np.float64), "mask of floats", {"mask"}
    if kind == "shape":
        return np.ones((n, int(np.prod(spatial)) + 1), bool), "mask shape off by one", {"mask"}
    return [[1]] * n, "mask of type", {"mask"}


def _empty_batch_reference(ref, args, kwargs, batched, part):
    """The reference on an empty batch, which it cannot reshape: run on one zero sample, keep the shapes.

    ``batched`` counts the leading arguments that carry the batch; the other results are parameter
    gradients, zero for no samples.
    """
    one = [np.zeros((1,) + a.shape[1:], a.dtype) if i < batched else a for i, a in enumerate(args)]
    result = ref(*one, **kwargs)
    if part == "forward":
        return result[:0]
    return tuple(r[:0] for r in result[:batched - 1]) + tuple(np.zeros_like(r) for r in result[batched - 1:])


def vlad_aggregate_call(draw, st, part):
    from lcnumba import testing

    dtype = draw(st.sampled_from(FLOATS))
    n, d, k = draw(st.integers(0, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    spatial = draw(st.sampled_from([(draw(st.integers(1, 6)),), (draw(st.integers(1, 3)), draw(st.integers(1, 3)))]))
    x = _layout(draw, st, _values(draw, st, (n, d) + spatial, dtype), readonly=True)
    a = _layout(draw, st, _values(draw, st, (n, k) + spatial, dtype))
    # halved: a centroid equal to a descriptor (the same drawn seed) leaves a residual of rounding errors,
    # whose direction the normalisation makes O(1)
    c = _layout(draw, st, _values(draw, st, (k, d), dtype) * dtype.type(0.5))
    keywords = _vlad_switches(draw, st)
    floats = ["x", "assignment", "centroids"]
    positional = [("x", x), ("assignment", a), ("centroids", c)]
    out_key = None
    if part == "forward":
        if draw(st.booleans()):
            keywords["out"] = np.full((n, k * d), 7, dtype)
            out_key = "out"
    else:
        positional.insert(0, ("dy", _layout(draw, st, _values(draw, st, (n, k * d), dtype))))
        floats.insert(0, "dy")
    ref = getattr(testing, f"vlad_aggregate_{part}")

    def expect(call):
        args = [v for _, v in call.positional]
        kwargs = {k: v for k, v in call.keywords.items() if k not in ("out", "stream")}
        if not all(isinstance(v, np.ndarray) and v.ndim for v in args) or args[0].shape[0]:
            return ref(*args, **kwargs)
        return _empty_batch_reference(ref, args, kwargs, len(args) - 1, part)

    call = Call(f"vlad_aggregate_{part}", positional, keywords, expect=expect, out_key=out_key)
    if draw(st.integers(0, 5)):
        sp = Spoilers(draw, st, call, set(floats))
        target = draw(st.sampled_from(floats + ["intra_normalize", "final_normalize", "eps"] +
                                      (["out"] if part == "forward" else [])))
        spoilt, label, allowed = _spoil_vlad(sp, draw, st, call, target, floats, (n, k * d), dtype)
        call.set(target, spoilt)
        call.mutation, call.allowed = label, allowed
    return call


def netvlad_pca_call(draw, st, part):
    from lcnumba import testing

    dtype = draw(st.sampled_from(FLOATS))
    n, p, q = draw(st.integers(0, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 3))
    v = _layout(draw, st, _values(draw, st, (n, p), dtype), readonly=True)
    proj = _layout(draw, st, _values(draw, st, (q, p), dtype))
    bias = _layout(draw, st, _values(draw, st, (q,), dtype))
    keywords = {}
    if draw(st.integers(0, 3)) == 0:
        keywords["eps"] = draw(st.sampled_from([1e-6, 1e-3, 1.0, 1e-30]))
    floats = ["v", "projection", "bias"]
    positional = [("v", v), ("projection", proj), ("bias", bias)]
    out_key = None
    if part == "forward":
        if draw(st.booleans()):
            keywords["out"] = np.full((n, q), 7, dtype)
            out_key = "out"
    else:
        positional.insert(0, ("dy", _layout(draw, st, _values(draw, st, (n, q), dtype))))
        floats.insert(0, "dy")
    ref = getattr(testing, f"netvlad_pca_{part}")

    def expect(call):
        return ref(*[v for _, v in call.positional], **{k: v for k, v in call.keywords.items() if k != "out"})

    call = Call(f"netvlad_pca_{part}", positional, keywords, expect=expect, out_key=out_key)
    if draw(st.integers(0, 5)):
        sp = Spoilers(draw, st, call, set(floats))
        target = draw(st.sampled_from(floats + ["eps"] + (["out"] if part == "forward" else [])))
        spoilt, label, allowed = _spoil_vlad(sp, draw, st, call, target, floats, (n, q), dtype)
        call.set(target, spoilt)
        call.mutation, call.allowed = label, allowed
    return call


def netvlad_pca_fit_call(draw, st):
    dtype = draw(st.sampled_from(FLOATS))
    m, p = draw(st.integers(2, 8)), draw(st.integers(1, 5))
    vectors = _layout(draw, st, _values(draw, st, (m, p), dtype, special=False), readonly=True)
    dim = draw(st.integers(1, min(m - 1, p)))
    keywords = {"whiten": draw(st.booleans())} if draw(st.booleans()) else {}
    call = Call("netvlad_pca_fit", [("vectors", vectors), ("dim", dim)], keywords,
                expect=lambda call: ("pca", call.get("vectors"), call.get("dim")), compare=_pca_fit_result)
    if draw(st.integers(0, 3)):
        sp = Spoilers(draw, st, call, {"vectors", "dim"})
        target = draw(st.sampled_from(["vectors", "dim", "whiten", "special"]))
        if target in ("vectors", "special"):
            target, spoilt, label, allowed = _spoilt_samples(sp, draw, st, "vectors", vectors, target, "dim")
        elif target == "dim":
            spoilt = draw(st.sampled_from([0, -1, min(m - 1, p) + 1, 1.0, "2", None, True]))
            label, allowed = f"dim={spoilt!r}", {"dim"}
        else:
            spoilt, label, allowed = sp.flag(target)
        call.set(target, spoilt)
        call.mutation, call.allowed = label, allowed
    return call


def _spoilt_samples(sp, draw, st, name, value, target, count):
    """Spoil the sample array ``name`` of a fit: as any array (``count``, the size asked for, may then be
    named instead), or, for ``target == "special"``, with a NaN or inf cell. ``(name, value, label, allowed)``."""
    if target == "special":
        spoilt = np.array(value)
        spoilt.flat[0] = draw(st.sampled_from([np.nan, np.inf]))
        return name, spoilt, f"{name} with NaN/inf", {name}
    spoilt, label, allowed = sp.array(name, value)
    return name, spoilt, label, allowed | {count}


def _pca_fit_result(call, result, expected):
    """A PCA fit has no unique reference (eigenvectors of equal eigenvalues): shapes, dtypes, centring."""
    _, vectors, dim = expected
    assert isinstance(result, tuple) and len(result) == 2, f"{call!r}\n{type(result)}"
    projection, bias = result
    assert projection.shape == (dim, vectors.shape[1]) and bias.shape == (dim,), f"{call!r}\nshapes"
    assert projection.dtype == vectors.dtype == bias.dtype, f"{call!r}\ndtypes"
    assert np.all(np.isfinite(projection)) and np.all(np.isfinite(bias)), f"{call!r}\nnot finite"
    z = vectors.astype(np.float64) @ projection.T.astype(np.float64) + bias
    scale = max(1.0, float(np.abs(z).max()))
    assert np.abs(z.mean(axis=0)).max() <= 1e-3 * scale, f"{call!r}\nthe projected vectors are not centred"


def netvlad_init_call(draw, st):
    dtype = draw(st.sampled_from(FLOATS))
    m, d = draw(st.integers(2, 12)), draw(st.integers(2, 4))  # D = 1: all descriptors normalise to +-1
    shape = draw(st.sampled_from([(m, d), (1, d, m), (1, d, 2, m)]))
    descriptors = _layout(draw, st, _values(draw, st, shape, dtype, special=False), readonly=True)
    k = draw(st.integers(1, 2))
    keywords = dict(num_ghost=draw(st.integers(0, 2)), seed=draw(st.integers(0, 5)))
    if k == 1 or draw(st.booleans()):  # the default alpha needs two clusters
        keywords["alpha"] = draw(st.sampled_from([0.5, 10.0]))

    def expect(call):
        descriptors = call.get("descriptors")
        dd = descriptors.shape[1]
        kk, gg = call.get("num_clusters"), call.keywords.get("num_ghost", 0)
        return ("init", (kk + gg, dd), (kk + gg,), (kk, dd), descriptors.dtype)

    call = Call("netvlad_init", [("descriptors", descriptors), ("num_clusters", k)], keywords, expect=expect,
                compare=_init_result)
    if draw(st.integers(0, 3)):
        sp = Spoilers(draw, st, call, {"descriptors", "num_clusters"})
        target = draw(st.sampled_from(["descriptors", "num_clusters", "num_ghost", "alpha", "seed", "special"]))
        if target in ("descriptors", "special"):
            target, spoilt, label, allowed = _spoilt_samples(sp, draw, st, "descriptors", descriptors, target,
                                                             "num_clusters")
        elif target == "alpha":
            spoilt = draw(st.sampled_from([0.0, -1.0, float("nan"), "1", True]))
            label, allowed = f"alpha={spoilt!r}", {"alpha"}
        else:
            spoilt = draw(st.sampled_from([-1, 1.5, "2", None, True] + ([0, 10**6] if target == "num_clusters" else [])))
            label, allowed = f"{target}={spoilt!r}", {target}
        call.set(target, spoilt)
        call.mutation, call.allowed = label, allowed
    return call


def init_call(draw, st, fn_name):
    from lcnumba.init import _FAMILIES as LAYOUTS

    family = draw(st.sampled_from(INIT_FAMILIES))
    ndim = LAYOUTS[family][0]
    shape = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    positional = [("weight_shape", shape)]
    keywords = {}
    if family != "conv2d" or draw(st.booleans()):
        positional.append(("family", family))
    if fn_name != "fans":
        keywords["dtype"] = draw(st.sampled_from([np.float32, np.float64, "float32", np.dtype(np.float64)]))
        keywords["seed"] = draw(st.sampled_from([None, 0, 3]))

    def expect(call):
        shape = call.get("weight_shape")
        if fn_name == "fans":
            lead = LAYOUTS[call.get("family") or "conv2d"][1]
            receptive = 1
            for size in shape[lead + 2:]:
                receptive *= size
            return (shape[lead + 1] * receptive, shape[lead] * receptive)
        return ("init", tuple(shape), np.dtype(call.keywords.get("dtype", np.float32)))

    call = Call(fn_name, positional, keywords, expect=expect, compare=_init_result)
    if draw(st.integers(0, 3)):
        sp = Spoilers(draw, st, call, {"weight_shape", "family"})
        target = draw(st.sampled_from(["weight_shape", "family"] + list(keywords)))
        if target == "weight_shape":
            spoilt, label, allowed = sp.shape(target, shape)
            if label.endswith("huge"):
                spoilt, label = tuple(spoilt[:-1]) + (0,), "weight_shape with a zero"
        elif target == "family":
            spoilt, label, allowed = sp.choice(target)
            allowed |= {"weight_shape"}
        elif target == "dtype":
            spoilt = draw(st.sampled_from([np.int64, np.float16, "int8", None, 3, "bogus", complex]))
            label, allowed = f"dtype={spoilt!r}", {"dtype"}
        else:
            spoilt = draw(st.sampled_from([-1, 1.5, "2", True]))
            label, allowed = f"seed={spoilt!r}", {"seed"}
        call.set(target, spoilt)
        call.mutation, call.allowed = label, allowed
    return call


def _init_result(call, result, expected):
    """Initialisers have no reference: shapes, dtypes and finiteness."""
    if expected[0] != "init":
        _compare(call, result, expected)
        return
    if len(expected) == 3:
        assert isinstance(result, np.ndarray) and result.shape == expected[1] and result.dtype == expected[2], \
            f"{call!r}\n{type(result)} {getattr(result, 'shape', '')} {getattr(result, 'dtype', '')}"
        assert np.all(np.isfinite(result)), f"{call!r}\nnot finite"
        return
    _, w_shape, b_shape, c_shape, dtype = expected
    assert isinstance(result, tuple) and len(result) == 3, f"{call!r}\n{type(result)}"
    for array, shape in zip(result, (w_shape, b_shape, c_shape)):
        assert array.shape == shape and array.dtype == dtype and np.all(np.isfinite(array)), \
            f"{call!r}\n{array.shape} {array.dtype}"


# ---------------------------------------------------------------- the specs and the child's main


def specs():
    """(public function name, builder(draw, st) -> Call) for every public function."""
    out = []
    for family in FAMILIES:
        for part in PARTS:
            out.append((f"{family}_{part}", lambda d, s, f=family, p=part: conv_call(d, s, f, p)))
        out.append((f"{family}_output_shape", lambda d, s, f=family: conv_query_call(d, s, f)))
    for spatial in (1, 2):
        for part in ("forward", "backward"):
            out.append((f"max_pool{spatial}d_{part}", lambda d, s, sp=spatial, p=part: pool_call(d, s, sp, p)))
        out.append((f"max_pool{spatial}d_output_shape", lambda d, s, sp=spatial: pool_query_call(d, s, sp)))
    for part in ("forward", "backward"):
        out.append((f"netvlad_{part}", lambda d, s, p=part: netvlad_call(d, s, p)))
    out.append(("netvlad_init", netvlad_init_call))
    for part in ("forward", "backward"):
        out.append((f"vlad_aggregate_{part}", lambda d, s, p=part: vlad_aggregate_call(d, s, p)))
        out.append((f"netvlad_pca_{part}", lambda d, s, p=part: netvlad_pca_call(d, s, p)))
    out.append(("netvlad_pca_fit", netvlad_pca_fit_call))
    for name in ("fans", "he_normal", "he_uniform", "glorot_normal", "glorot_uniform"):
        out.append((name, lambda d, s, n=name: init_call(d, s, n)))
    return out


def _describe_failure(exc):
    """The assertion messages of a failure (they hold the call), or the traceback of anything else."""
    if isinstance(exc, BaseExceptionGroup):
        return "\n".join(_describe_failure(e) for e in exc.exceptions)
    if isinstance(exc, AssertionError):
        return str(exc)
    return "".join(traceback.format_exception(exc))[-3000:]


def _fuzz_test(runner, builder, st):
    def check(data):
        runner.run(builder(data.draw, st))

    return check


def main(argv):
    import argparse
    import time
    import warnings

    from hypothesis import HealthCheck, Phase, given, seed, settings
    from hypothesis import strategies as st

    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=EXAMPLES)
    parser.add_argument("--summary", required=True)
    parser.add_argument("--progress")
    parser.add_argument("--only", default="")
    parser.add_argument("--shrink", action="store_true", help="shrink a failing case (slow)")
    parser.add_argument("--random", action="store_true", help="new cases each run (default: the same ones)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # k-means on tiny samples warns; results are checked, not warnings

    runner = Runner(args.progress)
    started = time.perf_counter()
    failures = []
    functions = 0
    for fn_name, builder in specs():
        if args.only and args.only not in fn_name:
            continue
        functions += 1

        check = _fuzz_test(runner, builder, st)
        phases = (Phase.generate, Phase.shrink) if args.shrink else (Phase.generate,)
        check = settings(max_examples=args.examples, deadline=None, database=None, phases=phases,
                         suppress_health_check=list(HealthCheck), print_blob=True)(given(st.data())(check))
        if not args.random:
            check = seed(zlib.crc32(fn_name.encode()))(check)  # the same cases every run, per function

        try:
            check()
        except Exception as exc:  # noqa: BLE001 - every failure is reported, the loop goes on
            failures.append(f"{fn_name}: " + _describe_failure(exc))
    summary = dict(cases=runner.cases, functions=functions, paths=sorted(runner.paths), failures=failures,
                   seconds=time.perf_counter() - started)
    Path(args.summary).write_text(json.dumps(summary, indent=1))
    print(f"fuzz: {runner.cases} cases, {functions} functions, {len(runner.paths)} distinct error paths, "
          f"{len(failures)} failing functions, {summary['seconds']:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
