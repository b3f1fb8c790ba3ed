/* A C host of lcnumba's C entry points: it embeds Python, asks lcnumba.capi
 * for the addresses of lcn_local_conv2d_forward_f32, two of its backward
 * passes, its forward with a padding mode and the transposed layer's
 * forward, calls them on buffers it
 * allocated itself and checks the results against naive loops computed here
 * in double precision.
 *
 * usage: host PYTHON_EXECUTABLE
 *   PYTHON_EXECUTABLE (a virtual environment's python) is set as the
 *   interpreter's program name, so that the embedded interpreter finds that
 *   environment's site-packages as the python executable would.
 * Prints "host: ok" and exits 0 when every check passes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lcnumba.h"

/* the geometry: groups, stride, asymmetric padding and dilation all in play */
enum { N = 2, C = 4, H = 7, W = 8, F = 4, GROUPS = 2, CG = C / GROUPS, KH = 3, KW = 2 };
enum { SH = 1, SW = 2, PT = 1, PL = 0, PB = 0, PR = 1, DH = 1, DW = 2 };

static int failures = 0;

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "host: FAILED %s\n", what);
        failures++;
    }
}

static float uniform(uint64_t *state) /* deterministic values in [-1, 1) */
{
    *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((double)(*state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static uintptr_t entry_address(PyObject *capi, const char *name)
{
    PyObject *value = PyObject_CallMethod(capi, "address", "s", name);
    uintptr_t address;
    if (value == NULL) {
        PyErr_Print();
        return 0;
    }
    address = (uintptr_t)PyLong_AsUnsignedLongLong(value);
    Py_DECREF(value);
    if (PyErr_Occurred()) {
        PyErr_Print();
        return 0;
    }
    return address;
}

static int max_error(const float *got, const double *want, size_t count, double tolerance)
{
    size_t i;
    for (i = 0; i < count; i++)
        if (fabs((double)got[i] - want[i]) > tolerance * (1.0 + fabs(want[i])))
            return 0;
    return 1;
}

int main(int argc, char **argv)
{
    PyConfig config;
    PyStatus status;
    PyObject *capi;
    PyThreadState *thread;
    lcn_local_conv2d_forward_f32_fn *forward;
    lcn_local_conv2d_backward_weight_f32_fn *backward_weight;
    lcn_local_conv2d_backward_input_f32_fn *backward_input;
    lcn_local_conv2d_transpose_forward_f32_fn *transpose;
    lcn_local_conv2d_forward_ex_f32_fn *forward_ex;
    int64_t oh, ow;
    size_t nx, nw, nb, ny, i;
    float *x, *w, *b, *y, *dy, *dw, *dx;
    double *y_ref, *dw_ref, *dx_ref, *y_circular;
    uint64_t seed = 42;
    int32_t rc;
    int n, f, c, ii, jj, a, bb;

    if (argc != 2) {
        fprintf(stderr, "usage: %s PYTHON_EXECUTABLE\n", argv[0]);
        return 2;
    }

    /* -- the interpreter, as if started from PYTHON_EXECUTABLE */
    PyConfig_InitPythonConfig(&config);
    status = PyConfig_SetBytesString(&config, &config.program_name, argv[1]);
    if (!PyStatus_Exception(status))
        status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status)) {
        Py_ExitStatusException(status);
    }
    /* magictoken.capi_c.begin */
    capi = PyImport_ImportModule("lcnumba.capi");
    if (capi == NULL) {
        PyErr_Print();
        return 1;
    }
    forward = (lcn_local_conv2d_forward_f32_fn *)entry_address(capi, "lcn_local_conv2d_forward_f32");
    backward_weight =
        (lcn_local_conv2d_backward_weight_f32_fn *)entry_address(capi, "lcn_local_conv2d_backward_weight_f32");
    backward_input =
        (lcn_local_conv2d_backward_input_f32_fn *)entry_address(capi, "lcn_local_conv2d_backward_input_f32");
    transpose =
        (lcn_local_conv2d_transpose_forward_f32_fn *)entry_address(capi, "lcn_local_conv2d_transpose_forward_f32");
    forward_ex = (lcn_local_conv2d_forward_ex_f32_fn *)entry_address(capi, "lcn_local_conv2d_forward_ex_f32");
    Py_DECREF(capi);
    if (!forward || !backward_weight || !backward_input || !transpose || !forward_ex)
        return 1;
    /* magictoken.capi_c.end */

    /* -- buffers, sized with the header's output-size helper */
    oh = lcn_conv_output_size(H, KH, SH, DH, PT, PB);
    ow = lcn_conv_output_size(W, KW, SW, DW, PL, PR);
    check(oh == 6 && ow == 4, "lcn_conv_output_size");
    nx = (size_t)N * C * H * W;
    nw = (size_t)oh * ow * F * CG * KH * KW;
    nb = (size_t)F * oh * ow;
    ny = (size_t)N * F * oh * ow;
    x = malloc(nx * sizeof *x);
    dx = malloc(nx * sizeof *dx);
    w = malloc(nw * sizeof *w);
    dw = malloc(nw * sizeof *dw);
    b = malloc(nb * sizeof *b);
    y = malloc(ny * sizeof *y);
    dy = malloc(ny * sizeof *dy);
    y_ref = calloc(ny, sizeof *y_ref);
    dw_ref = calloc(nw, sizeof *dw_ref);
    dx_ref = calloc(nx, sizeof *dx_ref);
    y_circular = calloc(ny, sizeof *y_circular);
    if (!x || !dx || !w || !dw || !b || !y || !dy || !y_ref || !dw_ref || !dx_ref || !y_circular)
        return 1;
    for (i = 0; i < nx; i++) x[i] = uniform(&seed);
    for (i = 0; i < nw; i++) w[i] = uniform(&seed);
    for (i = 0; i < nb; i++) b[i] = uniform(&seed);
    for (i = 0; i < ny; i++) dy[i] = uniform(&seed);

    /* -- naive loops: y = local_conv(x, w) + b, dw = dy (x) x, dx = local_conv^T(dy), and y_circular, y with
     *    the input wrapped around instead of zero-padded (every padding is at most the input size) */
#define X(n, c, h, v) x[(((size_t)(n) * C + (c)) * H + (h)) * W + (v)]
#define WIDX(i, j, f, c, a, bb) ((((((size_t)(i) * ow + (j)) * F + (f)) * CG + (c)) * KH + (a)) * KW + (bb))
#define YIDX(n, f, i, j) ((((size_t)(n) * F + (f)) * oh + (i)) * ow + (j))
    for (n = 0; n < N; n++)
        for (f = 0; f < F; f++)
            for (ii = 0; ii < oh; ii++)
                for (jj = 0; jj < ow; jj++) {
                    int g = f / (F / GROUPS);
                    double sum = b[((size_t)f * oh + ii) * ow + jj], circular = sum;
                    for (c = 0; c < CG; c++)
                        for (a = 0; a < KH; a++)
                            for (bb = 0; bb < KW; bb++) {
                                int h = ii * SH - PT + a * DH, v = jj * SW - PL + bb * DW;
                                size_t k = WIDX(ii, jj, f, c, a, bb);
                                double grad = dy[YIDX(n, f, ii, jj)];
                                circular += (double)w[k] * X(n, g * CG + c, (h + H) % H, (v + W) % W);
                                if (h < 0 || h >= H || v < 0 || v >= W)
                                    continue;
                                sum += (double)w[k] * X(n, g * CG + c, h, v);
                                dw_ref[k] += grad * X(n, g * CG + c, h, v);
                                dx_ref[(((size_t)n * C + g * CG + c) * H + h) * W + v] += grad * w[k];
                            }
                    y_ref[YIDX(n, f, ii, jj)] = sum;
                    y_circular[YIDX(n, f, ii, jj)] = circular;
                }

    /* -- the entry points; they need no GIL */
    /* magictoken.capi_call.begin */
    thread = PyEval_SaveThread(); /* let other Python threads run meanwhile */
    rc = forward(x, w, b, y, N, C, H, W, oh, ow, F, CG, KH, KW, SH, SW, PT, PL, PB, PR, DH, DW, GROUPS);
    /* magictoken.capi_call.end */
    check(rc == LCN_OK, "forward status");
    check(max_error(y, y_ref, ny, 1e-5), "forward values");

    rc = backward_weight(dy, x, dw, N, C, H, W, oh, ow, F, CG, KH, KW, SH, SW, PT, PL, PB, PR, DH, DW, GROUPS,
                         0);
    check(rc == LCN_OK, "backward_weight status");
    check(max_error(dw, dw_ref, nw, 1e-5), "backward_weight values");

    rc = backward_input(dy, w, dx, N, C, H, W, oh, ow, F, CG, KH, KW, SH, SW, PT, PL, PB, PR, DH, DW, GROUPS);
    check(rc == LCN_OK, "backward_input status");
    check(max_error(dx, dx_ref, nx, 1e-5), "backward_input values");

    /* -- the transposed layer with the same weight is the adjoint: its forward of dy is dx */
    memset(dx, 0, nx * sizeof *dx);
    /* magictoken.capi_transpose.begin */
    /* x (N, F, oh, ow) and the weight (oh, ow, F, CG, KH, KW): one bank per input position */
    check(lcn_conv_transpose_output_size(oh, KH, SH, DH, PT, PB, 0) == H &&
          lcn_conv_transpose_output_size(ow, KW, SW, DW, PL, PR, 0) == W, "lcn_conv_transpose_output_size");
    rc = transpose(dy, w, NULL, dx, N, F, oh, ow, /* n, c, h, w */
                   oh, ow, F, CG, KH, KW,             /* wh, ww, wc, fg, kh, kw */
                   SH, SW, PT, PL, PB, PR, 0, 0,      /* stride, padding, output_padding */
                   DH, DW, GROUPS);                   /* dilation, groups: y is (N, C, H, W) */
    /* magictoken.capi_transpose.end */
    check(rc == LCN_OK, "transposed forward status");
    check(max_error(dx, dx_ref, nx, 1e-5), "transposed forward values");
    rc = transpose(dy, w, NULL, dx, N, F, oh, ow, oh, ow, F, CG, KH, KW, SH, SW, PT, PL, PB, PR, SH, 0, DH, DW,
                   GROUPS);
    check(rc == LCN_ERR_PARAMETER, "output_padding = stride -> LCN_ERR_PARAMETER");

    /* -- the same layer with padding_mode circular (the _ex form: padding_mode last) */
    rc = forward_ex(x, w, b, y, N, C, H, W, oh, ow, F, CG, KH, KW, SH, SW, PT, PL, PB, PR, DH, DW, GROUPS,
                    LCN_PADDING_CIRCULAR);
    check(rc == LCN_OK, "circular forward status");
    check(max_error(y, y_circular, ny, 1e-5), "circular forward values");
    rc = forward_ex(x, w, b, y, N, C, H, W, oh, ow, F, CG, KH, KW, SH, SW, PT, PL, PB, PR, DH, DW, GROUPS, 4);
    check(rc == LCN_ERR_FLAG, "padding_mode 4 -> LCN_ERR_FLAG");

    /* -- bad arguments come back as status codes, with the output untouched */
    memset(y, 0, ny * sizeof *y);
    rc = forward(x, w, b, y, N, C, H, W, oh, ow + 1, F, CG, KH, KW, SH, SW, PT, PL, PB, PR, DH, DW, GROUPS);
    check(rc == LCN_ERR_SHAPE, "local weight of the wrong size -> LCN_ERR_SHAPE");
    rc = forward(NULL, w, b, y, N, C, H, W, oh, ow, F, CG, KH, KW, SH, SW, PT, PL, PB, PR, DH, DW, GROUPS);
    check(rc == LCN_ERR_NULL, "NULL x -> LCN_ERR_NULL");
    rc = forward(x, w, b, y, N, C, H, W, oh, ow, F, CG, KH, KW, SH, SW, PT, PL, PB, PR, DH, DW, 3);
    check(rc == LCN_ERR_GROUPS, "groups 3 -> LCN_ERR_GROUPS");
    for (i = 0; i < ny; i++)
        if (y[i] != 0.0f)
            break;
    check(i == ny, "output untouched by failed calls");
    PyEval_RestoreThread(thread);

    free(x); free(dx); free(w); free(dw); free(b); free(y); free(dy);
    free(y_ref); free(dw_ref); free(dx_ref); free(y_circular);
    if (Py_FinalizeEx() < 0)
        failures++;
    if (failures) {
        fprintf(stderr, "host: %d check(s) failed\n", failures);
        return 1;
    }
    printf("host: ok (local_conv2d forward, backward_weight, backward_input, circular forward, transposed forward; "
           "%lld x %lld output)\n",
           (long long)oh, (long long)ow);
    return 0;
}
