/* One beam-search step of the joint attention/CTC search, compiled.
 *
 * Why C and not numpy: a step of the grammar search is ~22 candidates over 12 prefixes and
 * 75 frames, so its numpy version spent most of its time in the fixed cost of some sixty small
 * array operations (~0.3 ms a step, ~1 step per phone token: the p95 of a 3 s command).
 * numba would remove that cost too, but it adds ~60 MB to a daemon held to 80 MB and has no
 * wheels for 32-bit Pi OS; this file needs only a C compiler (build-essential) at install.
 *
 * The arithmetic is numpy's, step for step (its logaddexp, its pairwise sum), so the search
 * ranks exactly as the numpy version did. Arrays arrive through the buffer protocol as
 * C-contiguous float64 / int64 (assistant/ctc.py prepares them and checks nothing else is
 * passed); every size is checked here too, so a wrong call is a ValueError, never a crash.
 *
 * Notation (Watanabe et al., "Hybrid CTC/attention", 2017): a prefix g has two arrays over
 * the T frames, r_n (paths ending in g's last label) and r_b (ending in blank); ``last`` is
 * g's last label, -1 for the empty prefix. by_token[c, t] is log P(c at frame t), its
 * running sums over t cum_by_token, the blank's cum_blank.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NEG_INF (-1e30)
#define LOGE2 0.693147180559945309417232121458176568

/* numpy's npy_logaddexp, so that results match its ufunc bit for bit. Most calls pair a
 * path with one far less likely (often NEG_INF): where the smaller term is under
 * exp(-40) < 4.3e-18 of the larger, and the larger is at least 1 in size, adding
 * log1p(exp(-d)) cannot change the sum's last bit, so exp and log1p are skipped. */
static inline double logaddexp(double x, double y) {
    if (x == y) return x + LOGE2;
    const double tmp = x - y;
    if (tmp > 0) return (tmp > 40 && fabs(x) >= 1.0) ? x : x + log1p(exp(-tmp));
    if (tmp <= 0) return (tmp < -40 && fabs(y) >= 1.0) ? y : y + log1p(exp(tmp));
    return tmp; /* nan */
}

/* numpy's pairwise summation (pairwise_sum_DOUBLE), the order np.sum adds in. */
static double pairwise_sum(const double *a, Py_ssize_t n) {
    if (n < 8) {
        double res = 0.0;
        for (Py_ssize_t i = 0; i < n; i++) res += a[i];
        return res;
    }
    if (n <= 128) {
        double r[8];
        Py_ssize_t i;
        for (int j = 0; j < 8; j++) r[j] = a[j];
        for (i = 8; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++) r[j] += a[i + j];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) res += a[i];
        return res;
    }
    Py_ssize_t n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

/* log P(transcript starts with g + c), summed over the frame where c is first emitted
 * (paths of g up to t - 1, then c at t), plus c at frame 0 when g is empty. ``either`` is
 * logaddexp(r_n, r_b) of g; ``work`` holds T doubles. */
static double prefix_score(const double *r_b, const double *either, int64_t last, int64_t c,
                           const double *x_c, Py_ssize_t T, double *work) {
    /* CTC merges repeats not split by a blank: c == last may follow only blank-ending paths */
    const double *phi = (c == last) ? r_b : either;
    double score = NEG_INF;
    const Py_ssize_t n = T - 1;
    if (n > 0) {
        double top = -INFINITY;
        for (Py_ssize_t t = 0; t < n; t++) {
            work[t] = phi[t] + x_c[t + 1];
            if (work[t] > top) top = work[t];
        }
        if (!isfinite(top)) top = 0.0;
        for (Py_ssize_t t = 0; t < n; t++) work[t] = exp(work[t] - top);
        score = top + log(pairwise_sum(work, n));
    }
    if (last < 0) score = logaddexp(x_c[0], score);
    return score;
}

/* r_n, r_b of g + c over all frames, into out_n / out_b (T each); ``either`` is
 * logaddexp(r_n, r_b) of g; ``work`` holds T doubles. */
static void advance_one(const double *either, const double *r_b, int64_t last, int64_t c,
                        const double *x_c, const double *cum_c, const double *cum_blank,
                        Py_ssize_t T, double *out_n, double *out_b, double *work) {
    const int empty = last < 0;
    out_n[0] = empty ? x_c[0] : NEG_INF;
    out_b[0] = NEG_INF;
    if (T > 1) {
        /* Paths that emit c first at frame t, divided by c's running product, summed up to
         * t; a start at frame 0 (empty g) joins the first term. */
        for (Py_ssize_t t = 0; t < T - 1; t++) {
            const double phi = (c == last) ? r_b[t] : either[t];
            work[t] = phi - cum_c[t];
        }
        if (empty) work[0] = logaddexp(work[0], out_n[0] - cum_c[0]);
        double acc = work[0];
        out_n[1] = cum_c[1] + acc;
        for (Py_ssize_t t = 1; t < T - 1; t++) {
            acc = logaddexp(acc, work[t]);
            out_n[t + 1] = cum_c[t + 1] + acc;
        }
        acc = out_n[0] - cum_blank[0];
        out_b[1] = cum_blank[1] + acc;
        for (Py_ssize_t t = 1; t < T - 1; t++) {
            acc = logaddexp(acc, out_n[t] - cum_blank[t]);
            out_b[t + 1] = cum_blank[t + 1] + acc;
        }
    }
    for (Py_ssize_t t = 0; t < T; t++) {
        if (out_n[t] < NEG_INF) out_n[t] = NEG_INF;
        if (out_b[t] < NEG_INF) out_b[t] = NEG_INF;
    }
}

/* ---- argument plumbing -------------------------------------------------------------- */

typedef struct {
    Py_buffer view;
    int held;
} Arg;

/* A C-contiguous buffer of ``count`` items of ``kind`` ('d' float64, 'q' int64). */
static int take(PyObject *obj, Arg *arg, char kind, Py_ssize_t count, int writable,
                const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &arg->view, flags) < 0) return -1;
    arg->held = 1;
    const char *fmt = arg->view.format ? arg->view.format : "B";
    if (*fmt == '<' || *fmt == '=' || *fmt == '@') fmt++;
    int ok = arg->view.itemsize == 8 &&
             (kind == 'd' ? strcmp(fmt, "d") == 0
                          : (strcmp(fmt, "q") == 0 || strcmp(fmt, "l") == 0));
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "%s: expected %s", name,
                     kind == 'd' ? "float64" : "int64");
        return -1;
    }
    if (arg->view.len != count * 8) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd items, got %zd", name, count,
                     arg->view.len / 8);
        return -1;
    }
    return 0;
}

static void release(Arg *args, int n) {
    for (int i = 0; i < n; i++)
        if (args[i].held) PyBuffer_Release(&args[i].view);
}

#define D(i) ((double *)args[i].view.buf)
#define I(i) ((int64_t *)args[i].view.buf)

/* Sizes and tokens shared by the entry points: n prefixes, T frames, W token rows. */
static int check_tokens(const int64_t *tokens, Py_ssize_t m, Py_ssize_t W) {
    for (Py_ssize_t i = 0; i < m; i++)
        if (tokens[i] < 0 || tokens[i] >= W) {
            PyErr_Format(PyExc_ValueError, "token %lld outside 0..%zd", (long long)tokens[i],
                         W - 1);
            return -1;
        }
    return 0;
}

static int check_rows(const int64_t *rows, Py_ssize_t m, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < m; i++)
        if (rows[i] < 0 || rows[i] >= n) {
            PyErr_Format(PyExc_ValueError, "prefix row %lld outside 0..%zd", (long long)rows[i],
                         n - 1);
            return -1;
        }
    return 0;
}

/* ---- select ------------------------------------------------------------------------- */

PyDoc_STRVAR(select_doc,
"select(total, r_n, r_b, last, by_token, cum_by_token, cum_blank, n, V, T, W, beam,\n"
"       weight, eos, out_rows, out_toks, out_joint, out_att, out_ctc, out_n, out_b)\n"
"       -> count\n\n"
"Ranks the extensions (row, token) of n live prefixes by (1 - weight) * attention +\n"
"weight * CTC prefix score. total [n, V]: attention log-prob of each extension, -inf where\n"
"the grammar forbids it. Each prefix's candidates are its allowed tokens, or only those\n"
"scoring at least its beam-th best when it allows more. </s> (eos) is scored by CTC with\n"
"all the prefix's paths at the last frame. The best 2 * beam that CTC can align are\n"
"written best first (ties in row-major order) to the out_* arrays (2 * beam each). The\n"
"first beam of them that are not </s>, the prefixes a beam keeps, are also advanced:\n"
"their r_n, r_b into out_n, out_b [beam, T].");

typedef struct {
    double joint, att, ctc;
    int64_t row, tok;
} Candidate;

static PyObject *select_candidates(PyObject *self, PyObject *const *a, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 21) {
        PyErr_SetString(PyExc_TypeError, "select takes 21 arguments");
        return NULL;
    }
    Py_ssize_t n = PyLong_AsSsize_t(a[7]), V = PyLong_AsSsize_t(a[8]);
    Py_ssize_t T = PyLong_AsSsize_t(a[9]), W = PyLong_AsSsize_t(a[10]);
    Py_ssize_t beam = PyLong_AsSsize_t(a[11]);
    double weight = PyFloat_AsDouble(a[12]);
    int64_t eos = PyLong_AsLongLong(a[13]);
    if (PyErr_Occurred()) return NULL;
    if (n < 0 || V < 1 || T < 1 || W < V || beam < 1 || eos < 0 || eos >= V) {
        PyErr_SetString(PyExc_ValueError, "select: bad sizes");
        return NULL;
    }
    const Py_ssize_t out = 2 * beam;
    Arg args[14];
    memset(args, 0, sizeof args);
    PyObject *result = NULL;
    double *either = NULL, *work = NULL;
    Candidate *best = NULL;
    if (take(a[0], &args[0], 'd', n * V, 0, "total") || take(a[1], &args[1], 'd', n * T, 0, "r_n") ||
        take(a[2], &args[2], 'd', n * T, 0, "r_b") || take(a[3], &args[3], 'q', n, 0, "last") ||
        take(a[4], &args[4], 'd', W * T, 0, "by_token") ||
        take(a[14], &args[5], 'q', out, 1, "out_rows") ||
        take(a[15], &args[6], 'q', out, 1, "out_toks") ||
        take(a[16], &args[7], 'd', out, 1, "out_joint") ||
        take(a[17], &args[8], 'd', out, 1, "out_att") ||
        take(a[18], &args[9], 'd', out, 1, "out_ctc") ||
        take(a[5], &args[10], 'd', W * T, 0, "cum_by_token") ||
        take(a[6], &args[11], 'd', T, 0, "cum_blank") ||
        take(a[19], &args[12], 'd', beam * T, 1, "out_n") ||
        take(a[20], &args[13], 'd', beam * T, 1, "out_b"))
        goto done;
    const double *total = D(0), *r_n = D(1), *r_b = D(2), *by_token = D(4);
    const int64_t *last = I(3);
    either = malloc(sizeof(double) * (size_t)(n * T + T + 1));
    best = malloc(sizeof(Candidate) * (size_t)(out + 1));
    if (!either || !best) {
        PyErr_NoMemory();
        goto done;
    }
    work = either + n * T;
    for (Py_ssize_t i = 0; i < n * T; i++) either[i] = logaddexp(r_n[i], r_b[i]);

    const Py_ssize_t k = beam < V ? beam : V;
    Py_ssize_t count = 0;
    double top_k[64]; /* the row's k best, descending (k <= beam; bounded below) */
    if (k > 64) {
        PyErr_SetString(PyExc_ValueError, "select: beam over 64");
        goto done;
    }
    for (Py_ssize_t row = 0; row < n; row++) {
        const double *att_row = total + row * V;
        /* The threshold: the row's k-th best when more than k tokens are allowed. */
        Py_ssize_t allowed = 0, held = 0;
        for (Py_ssize_t v = 0; v < V; v++) {
            const double x = att_row[v];
            if (!isfinite(x)) continue;
            allowed++;
            if (held < k || x > top_k[held - 1]) {
                Py_ssize_t j = held < k ? held++ : k - 1;
                while (j > 0 && top_k[j - 1] < x) {
                    top_k[j] = top_k[j - 1];
                    j--;
                }
                top_k[j] = x;
            }
        }
        const double bar = allowed > k ? top_k[k - 1] : -INFINITY;
        for (Py_ssize_t v = 0; v < V; v++) {
            const double att = att_row[v];
            if (!isfinite(att) || att < bar) continue;
            const double ctc =
                v == eos ? either[row * T + T - 1]
                         : prefix_score(r_b + row * T, either + row * T, last[row], v,
                                        by_token + v * T, T, work);
            const double joint = (1 - weight) * att + weight * ctc;
            /* Keep the best ``out`` in order; a tie goes after those already held, as a
             * stable sort of the row-major candidates would place it. */
            if (count == out && !(joint > best[out - 1].joint)) continue;
            Py_ssize_t j = count < out ? count++ : out - 1;
            while (j > 0 && best[j - 1].joint < joint) {
                best[j] = best[j - 1];
                j--;
            }
            best[j] = (Candidate){joint, att, ctc, row, v};
        }
    }
    Py_ssize_t ranked = 0, live = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        const Candidate *cand = &best[i];
        if (!(cand->joint >= -1e29)) continue; /* paths CTC cannot align */
        I(5)[ranked] = cand->row;
        I(6)[ranked] = cand->tok;
        D(7)[ranked] = cand->joint;
        D(8)[ranked] = cand->att;
        D(9)[ranked] = cand->ctc;
        ranked++;
        if (cand->tok != eos && live < beam) {
            const Py_ssize_t row = cand->row, c = cand->tok;
            advance_one(either + row * T, r_b + row * T, last[row], c, by_token + c * T,
                        D(10) + c * T, D(11), T, D(12) + live * T, D(13) + live * T, work);
            live++;
        }
    }
    result = PyLong_FromSsize_t(ranked);
done:
    free(either);
    free(best);
    release(args, 14);
    return result;
}

/* ---- prefix scores and advance -------------------------------------------------------- */

PyDoc_STRVAR(scores_doc,
"prefix_scores(r_n, r_b, last, rows, tokens, by_token, n, m, T, W, out)\n\n"
"log P(transcript starts with g + c) for m extensions: prefix rows[i] (of n) and label\n"
"tokens[i] (not </s>), into out [m].");

static PyObject *prefix_scores(PyObject *self, PyObject *const *a, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "prefix_scores takes 11 arguments");
        return NULL;
    }
    Py_ssize_t n = PyLong_AsSsize_t(a[6]), m = PyLong_AsSsize_t(a[7]);
    Py_ssize_t T = PyLong_AsSsize_t(a[8]), W = PyLong_AsSsize_t(a[9]);
    if (PyErr_Occurred()) return NULL;
    if (n < 0 || m < 0 || T < 1 || W < 1) {
        PyErr_SetString(PyExc_ValueError, "prefix_scores: bad sizes");
        return NULL;
    }
    Arg args[7];
    memset(args, 0, sizeof args);
    PyObject *result = NULL;
    double *work = NULL;
    if (take(a[0], &args[0], 'd', n * T, 0, "r_n") || take(a[1], &args[1], 'd', n * T, 0, "r_b") ||
        take(a[2], &args[2], 'q', n, 0, "last") || take(a[3], &args[3], 'q', m, 0, "rows") ||
        take(a[4], &args[4], 'q', m, 0, "tokens") ||
        take(a[5], &args[5], 'd', W * T, 0, "by_token") ||
        take(a[10], &args[6], 'd', m, 1, "out"))
        goto done;
    if (check_rows(I(3), m, n) || check_tokens(I(4), m, W)) goto done;
    work = malloc(sizeof(double) * (size_t)(2 * T));
    if (!work) {
        PyErr_NoMemory();
        goto done;
    }
    double *either = work + T;
    for (Py_ssize_t i = 0; i < m; i++) {
        const int64_t row = I(3)[i], c = I(4)[i];
        for (Py_ssize_t t = 0; t < T; t++)
            either[t] = logaddexp(D(0)[row * T + t], D(1)[row * T + t]);
        D(6)[i] = prefix_score(D(1) + row * T, either, I(2)[row], c, D(5) + c * T, T, work);
    }
    result = Py_NewRef(Py_None);
done:
    free(work);
    release(args, 7);
    return result;
}

PyDoc_STRVAR(advance_doc,
"advance(r_n, r_b, last, rows, tokens, by_token, cum_by_token, cum_blank, n, m, T, W,\n"
"        out_n, out_b)\n\n"
"The time arrays r_n, r_b of g + c for m extensions (prefix rows[i], label tokens[i]),\n"
"into out_n, out_b [m, T]: what a beam keeps of each prefix it lets live.");

static PyObject *advance(PyObject *self, PyObject *const *a, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 14) {
        PyErr_SetString(PyExc_TypeError, "advance takes 14 arguments");
        return NULL;
    }
    Py_ssize_t n = PyLong_AsSsize_t(a[8]), m = PyLong_AsSsize_t(a[9]);
    Py_ssize_t T = PyLong_AsSsize_t(a[10]), W = PyLong_AsSsize_t(a[11]);
    if (PyErr_Occurred()) return NULL;
    if (n < 0 || m < 0 || T < 1 || W < 1) {
        PyErr_SetString(PyExc_ValueError, "advance: bad sizes");
        return NULL;
    }
    Arg args[10];
    memset(args, 0, sizeof args);
    PyObject *result = NULL;
    double *work = NULL;
    if (take(a[0], &args[0], 'd', n * T, 0, "r_n") || take(a[1], &args[1], 'd', n * T, 0, "r_b") ||
        take(a[2], &args[2], 'q', n, 0, "last") || take(a[3], &args[3], 'q', m, 0, "rows") ||
        take(a[4], &args[4], 'q', m, 0, "tokens") ||
        take(a[5], &args[5], 'd', W * T, 0, "by_token") ||
        take(a[6], &args[6], 'd', W * T, 0, "cum_by_token") ||
        take(a[7], &args[7], 'd', T, 0, "cum_blank") ||
        take(a[12], &args[8], 'd', m * T, 1, "out_n") ||
        take(a[13], &args[9], 'd', m * T, 1, "out_b"))
        goto done;
    if (check_rows(I(3), m, n) || check_tokens(I(4), m, W)) goto done;
    work = malloc(sizeof(double) * (size_t)(2 * T));
    if (!work) {
        PyErr_NoMemory();
        goto done;
    }
    double *either = work + T;
    for (Py_ssize_t i = 0; i < m; i++) {
        const int64_t row = I(3)[i], c = I(4)[i];
        for (Py_ssize_t t = 0; t < T; t++)
            either[t] = logaddexp(D(0)[row * T + t], D(1)[row * T + t]);
        advance_one(either, D(1) + row * T, I(2)[row], c, D(5) + c * T, D(6) + c * T, D(7), T,
                    D(8) + i * T, D(9) + i * T, work);
    }
    result = Py_NewRef(Py_None);
done:
    free(work);
    release(args, 10);
    return result;
}

static PyMethodDef methods[] = {
    {"select", (PyCFunction)(void (*)(void))select_candidates, METH_FASTCALL, select_doc},
    {"prefix_scores", (PyCFunction)(void (*)(void))prefix_scores, METH_FASTCALL, scores_doc},
    {"advance", (PyCFunction)(void (*)(void))advance, METH_FASTCALL, advance_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_ctcstep",
    .m_doc = "One step of the joint attention/CTC beam search, compiled (see assistant/ctc.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__ctcstep(void) { return PyModule_Create(&module); }
