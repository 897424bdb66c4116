/* One beam-search step of the joint attention/CTC search, compiled.
 *
 * Why C and not numpy: a step of the grammar search is ~22 candidates over 12 prefixes and
 * 75 frames, so its numpy version spent most of its time in the fixed cost of some sixty small
 * array operations (~0.3 ms a step, ~1 step per phone token: the p95 of a 3 s command).
 * numba would remove that cost too, but it adds ~60 MB to a daemon held to 80 MB and has no
 * wheels for 32-bit Pi OS; this file needs only a C compiler (build-essential) at install.
 *
 * The CTC recursions (Watanabe et al., "Hybrid CTC/attention", 2017) run on probabilities,
 * not log-probabilities: a prefix g carries, per frame t, N[t] (its paths ending in its last
 * label) and B[t] (ending in blank) scaled so that log P = log N[t] + S[t] + k, where S[t] is
 * the best path's log-prob up to t (the same for every prefix) and k the prefix's own scale,
 * renewed at every step so that its largest value is 1. A frame is then a few
 * multiply-adds instead of logaddexp's exp and log1p (a step of the home grammar: 84 -> 28 us
 * here, call included). Values more than
 * e^-708 below a prefix's largest flush to zero; such paths cannot change a sum of log-probs
 * at double precision, and a prefix with no path left scores NEG_INF as before.
 *
 * Arrays arrive through the buffer protocol as C-contiguous float64 / int64 (assistant/ctc.py
 * prepares them); every size is checked here too, so a wrong call is a ValueError, never a
 * crash. A state is [n, 2T + 1]: N, B, then k, per prefix. The scorer's tables are one array:
 * P [W, T] = exp(x[t, c] - s_t) (s_t: frame t's best log-prob), Q [W, T] = exp(S[t - 1] +
 * x[t, c]) (column 0 unused), x0 [W] = x[0, c], S [T]; the blank is token W - 1.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NEG_INF (-1e30)
#define LOGE2 0.693147180559945309417232121458176568

/* numpy's npy_logaddexp. */
static inline double logaddexp(double x, double y) {
    if (x == y) return x + LOGE2;
    const double tmp = x - y;
    if (tmp > 0) return x + log1p(exp(-tmp));
    if (tmp <= 0) return y + log1p(exp(tmp));
    return tmp; /* nan */
}

typedef struct {
    const double *P, *Q, *x0, *S;
    Py_ssize_t T, W;
} Tables;

static Tables tables_of(const double *buf, Py_ssize_t T, Py_ssize_t W) {
    return (Tables){buf, buf + W * T, buf + 2 * W * T, buf + 2 * W * T + W, T, W};
}

static inline Py_ssize_t tables_size(Py_ssize_t T, Py_ssize_t W) { return 2 * W * T + W + T; }

/* All paths of g, into phi [T]. */
static void all_paths(const double *g, Py_ssize_t T, double *phi) {
    for (Py_ssize_t t = 0; t < T; t++) phi[t] = g[t] + g[T + t];
}

/* The paths of g that c may follow, into phi [T]: all of them, or only those ending in blank
 * when c repeats g's last label (CTC merges repeats not split by a blank). */
static void paths_before(const double *g, int64_t last, int64_t c, Py_ssize_t T, double *phi) {
    if (c == last) memcpy(phi, g + T, sizeof(double) * (size_t)T);
    else all_paths(g, T, phi);
}

/* log P(transcript starts with g + c): over the frame t at which c is first emitted, (paths
 * of g up to t - 1) x (c at t), plus c at frame 0 when g is empty. */
static double prefix_score(const double *phi, double k, int64_t last, int64_t c,
                           const Tables *tb) {
    const double *q = tb->Q + c * tb->T;
    double dot = 0.0;
    for (Py_ssize_t t = 1; t < tb->T; t++) dot += phi[t - 1] * q[t];
    double score = dot > 0 ? k + log(dot) : NEG_INF;
    if (last < 0) score = logaddexp(tb->x0[c], score);
    return score;
}

/* log P(transcript == g): all its paths at the last frame. */
static double final_score(const double *g, const Tables *tb) {
    const Py_ssize_t T = tb->T;
    const double v = g[T - 1] + g[2 * T - 1];
    return v > 0 ? log(v) + tb->S[T - 1] + g[2 * T] : NEG_INF;
}

/* The state of g + c into out [2T + 1], from phi (paths_before) and g's scale k. */
static void advance_one(const double *phi, double k, int64_t last, int64_t c, const Tables *tb,
                        double *out) {
    const Py_ssize_t T = tb->T;
    const double *p_c = tb->P + c * T, *p_blank = tb->P + (tb->W - 1) * T;
    double *n = out, *b = out + T;
    n[0] = last < 0 ? exp(tb->x0[c] - tb->S[0] - k) : 0.0;
    b[0] = 0.0;
    double top = n[0];
    for (Py_ssize_t t = 1; t < T; t++) {
        n[t] = (n[t - 1] + phi[t - 1]) * p_c[t];
        b[t] = (b[t - 1] + n[t - 1]) * p_blank[t];
        if (n[t] > top) top = n[t];
        if (b[t] > top) top = b[t];
    }
    if (top > 0 && isfinite(top)) {
        const double inv = 1.0 / top;
        for (Py_ssize_t t = 0; t < 2 * T; t++) out[t] *= inv;
        k += log(top);
    }
    out[2 * T] = k;
}

/* ---- argument plumbing -------------------------------------------------------------- */

typedef struct {
    Py_buffer view;
    int held;
} Arg;

/* A C-contiguous buffer of ``count`` items of ``kind`` ('d' float64, 'f' float32, 'q'
 * int64). */
static int take(PyObject *obj, Arg *arg, char kind, Py_ssize_t count, int writable,
                const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &arg->view, flags) < 0) return -1;
    arg->held = 1;
    const char *fmt = arg->view.format ? arg->view.format : "B";
    if (*fmt == '<' || *fmt == '=' || *fmt == '@') fmt++;
    const Py_ssize_t size = kind == 'f' ? 4 : 8;
    int ok = arg->view.itemsize == size &&
             (kind == 'q' ? (strcmp(fmt, "q") == 0 || strcmp(fmt, "l") == 0)
                          : fmt[0] == kind && fmt[1] == 0);
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "%s: expected %s", name,
                     kind == 'd' ? "float64" : kind == 'f' ? "float32" : "int64");
        return -1;
    }
    if (arg->view.len != count * size) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd items, got %zd", name, count,
                     arg->view.len / size);
        return -1;
    }
    return 0;
}

static void release(Arg *args, int n) {
    for (int i = 0; i < n; i++)
        if (args[i].held) PyBuffer_Release(&args[i].view);
}

#define D(i) ((double *)args[i].view.buf)
#define F(i) ((float *)args[i].view.buf)
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

static int check_rows(const int64_t *rows, Py_ssize_t m, Py_ssize_t n, const char *what) {
    for (Py_ssize_t i = 0; i < m; i++)
        if (rows[i] < 0 || rows[i] >= n) {
            PyErr_Format(PyExc_ValueError, "%s %lld outside 0..%zd", what, (long long)rows[i],
                         n - 1);
            return -1;
        }
    return 0;
}

/* ---- select ------------------------------------------------------------------------- */

PyDoc_STRVAR(select_doc,
"select(log_probs, prefix_att, masks, dstates, D, state, last, tables, n, V, T, W, beam,\n"
"       weight, eos, out_index, out_score, out_state) -> (count, kept)\n\n"
"Ranks the extensions (row, token) of n live prefixes by (1 - weight) * attention +\n"
"weight * CTC prefix score. An extension's attention log-prob is its prefix's (prefix_att\n"
"[n]) plus the step's (log_probs [n, V], float32) plus the mask of the prefix's grammar\n"
"state (masks [D, V], float32: 0, or -inf where the grammar forbids the token; dstates\n"
"[n]). Each prefix's candidates are its allowed tokens, or only those\n"
"scoring at least its beam-th best when it allows more. </s> (eos) is scored by CTC with\n"
"all the prefix's paths at the last frame. The best 2 * beam that CTC can align are\n"
"written best first (ties in row-major order): rows and tokens to out_index [2, 2 * beam],\n"
"joint, attention and CTC scores to out_score [3, 2 * beam]. The first beam of them that\n"
"are not </s>, the prefixes a beam keeps, are advanced into out_state [beam, 2T + 1]:\n"
"``kept`` of them.");

typedef struct {
    double joint, att, ctc;
    int64_t row, tok;
} Candidate;

static PyObject *select_candidates(PyObject *self, PyObject *const *a, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 18) {
        PyErr_SetString(PyExc_TypeError, "select takes 18 arguments");
        return NULL;
    }
    Py_ssize_t n_masks = PyLong_AsSsize_t(a[4]);
    Py_ssize_t n = PyLong_AsSsize_t(a[8]), V = PyLong_AsSsize_t(a[9]);
    Py_ssize_t T = PyLong_AsSsize_t(a[10]), W = PyLong_AsSsize_t(a[11]);
    Py_ssize_t beam = PyLong_AsSsize_t(a[12]);
    double weight = PyFloat_AsDouble(a[13]);
    int64_t eos = PyLong_AsLongLong(a[14]);
    if (PyErr_Occurred()) return NULL;
    if (n < 0 || V < 1 || T < 1 || W < V + 1 || beam < 1 || beam > 64 || eos < 0 ||
        eos >= V || n_masks < 1) {
        PyErr_SetString(PyExc_ValueError, "select: bad sizes");
        return NULL;
    }
    const Py_ssize_t out = 2 * beam, width = 2 * T + 1;
    Arg args[10];
    memset(args, 0, sizeof args);
    PyObject *result = NULL;
    double *phi = NULL;
    Candidate *best = NULL;
    if (take(a[0], &args[0], 'f', n * V, 0, "log_probs") ||
        take(a[1], &args[1], 'd', n, 0, "prefix_att") ||
        take(a[2], &args[2], 'f', n_masks * V, 0, "masks") ||
        take(a[3], &args[3], 'q', n, 0, "dstates") ||
        take(a[5], &args[4], 'd', n * width, 0, "state") ||
        take(a[6], &args[5], 'q', n, 0, "last") ||
        take(a[7], &args[6], 'd', tables_size(T, W), 0, "tables") ||
        take(a[15], &args[7], 'q', 2 * out, 1, "out_index") ||
        take(a[16], &args[8], 'd', 3 * out, 1, "out_score") ||
        take(a[17], &args[9], 'd', beam * width, 1, "out_state"))
        goto done;
    if (check_rows(I(3), n, n_masks, "grammar state")) goto done;
    const float *log_probs = F(0), *masks = F(2);
    const double *prefix_att = D(1), *state = D(4);
    const int64_t *dstates = I(3), *last = I(5);
    const Tables tb = tables_of(D(6), T, W);
    phi = malloc(sizeof(double) * (size_t)(n * T + T + V + 1));
    best = malloc(sizeof(Candidate) * (size_t)(out + 1));
    if (!phi || !best) {
        PyErr_NoMemory();
        goto done;
    }
    double *repeat_phi = phi + n * T, *att_row = repeat_phi + T;
    /* Each prefix's paths, which every candidate but a repeat of its last label follows. */
    for (Py_ssize_t row = 0; row < n; row++) all_paths(state + row * width, T, phi + row * T);

    const Py_ssize_t k = beam < V ? beam : V;
    Py_ssize_t count = 0;
    double top_k[64]; /* the row's k best, descending */
    for (Py_ssize_t row = 0; row < n; row++) {
        const double *g = state + row * width;
        const float *lp = log_probs + row * V, *mask = masks + dstates[row] * V;
        /* In numpy's order: (prefix + step) + mask, each float32 made double first. */
        for (Py_ssize_t v = 0; v < V; v++)
            att_row[v] = (prefix_att[row] + (double)lp[v]) + (double)mask[v];
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
            double ctc;
            if (v == eos) ctc = final_score(g, &tb);
            else if (v == last[row]) {
                paths_before(g, last[row], v, T, repeat_phi);
                ctc = prefix_score(repeat_phi, g[2 * T], last[row], v, &tb);
            } else ctc = prefix_score(phi + row * T, g[2 * T], last[row], v, &tb);
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
    int64_t *rows = I(7), *toks = I(7) + out;
    double *joints = D(8), *atts = D(8) + out, *ctcs = D(8) + 2 * out;
    Py_ssize_t ranked = 0, live = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        const Candidate *cand = &best[i];
        if (!(cand->joint >= -1e29)) continue; /* paths CTC cannot align */
        rows[ranked] = cand->row;
        toks[ranked] = cand->tok;
        joints[ranked] = cand->joint;
        atts[ranked] = cand->att;
        ctcs[ranked] = cand->ctc;
        ranked++;
        if (cand->tok != eos && live < beam) {
            const int64_t row = cand->row, c = cand->tok, prev = last[row];
            const double *g = state + row * width;
            const double *before = phi + row * T;
            if (c == prev) {
                paths_before(g, prev, c, T, repeat_phi);
                before = repeat_phi;
            }
            advance_one(before, g[2 * T], prev, c, &tb, D(9) + live * width);
            live++;
        }
    }
    result = Py_BuildValue("(nn)", ranked, live);
done:
    free(phi);
    free(best);
    release(args, 10);
    return result;
}

/* ---- prefix scores and advance -------------------------------------------------------- */

/* Shared by prefix_scores and advance: (state, last, rows, tokens, tables, n, m, T, W, out)
 * with out of ``out_width`` doubles per extension. */
typedef struct {
    Arg args[6];
    Py_ssize_t n, m, T, W;
} Extensions;

static int take_extensions(PyObject *const *a, Py_ssize_t nargs, const char *name,
                           Py_ssize_t out_width, Extensions *e) {
    memset(e, 0, sizeof *e);
    if (nargs != 10) {
        PyErr_Format(PyExc_TypeError, "%s takes 10 arguments", name);
        return -1;
    }
    e->n = PyLong_AsSsize_t(a[5]);
    e->m = PyLong_AsSsize_t(a[6]);
    e->T = PyLong_AsSsize_t(a[7]);
    e->W = PyLong_AsSsize_t(a[8]);
    if (PyErr_Occurred()) return -1;
    if (e->n < 0 || e->m < 0 || e->T < 1 || e->W < 2) {
        PyErr_Format(PyExc_ValueError, "%s: bad sizes", name);
        return -1;
    }
    const Py_ssize_t width = 2 * e->T + 1;
    Arg *args = e->args;
    if (take(a[0], &args[0], 'd', e->n * width, 0, "state") ||
        take(a[1], &args[1], 'q', e->n, 0, "last") || take(a[2], &args[2], 'q', e->m, 0, "rows") ||
        take(a[3], &args[3], 'q', e->m, 0, "tokens") ||
        take(a[4], &args[4], 'd', tables_size(e->T, e->W), 0, "tables") ||
        take(a[9], &args[5], 'd', e->m * (out_width ? out_width : width), 1, "out"))
        return -1;
    /* the blank (W - 1) is not a label */
    if (check_rows(I(2), e->m, e->n, "prefix row") || check_tokens(I(3), e->m, e->W - 1)) return -1;
    return 0;
}

PyDoc_STRVAR(scores_doc,
"prefix_scores(state, last, rows, tokens, tables, n, m, T, W, out)\n\n"
"log P(transcript starts with g + c) for m extensions: prefix rows[i] (of n) and label\n"
"tokens[i] (not </s>), into out [m].");

/* prefix_scores (scores != 0: one double per extension) and advance (a state per
 * extension): the same walk over the extensions, each from its prefix's paths. */
static PyObject *each_extension(PyObject *const *a, Py_ssize_t nargs, const char *name,
                                int scores) {
    Extensions e;
    PyObject *result = NULL;
    double *phi = NULL;
    if (take_extensions(a, nargs, name, scores ? 1 : 0, &e)) goto done;
    Arg *args = e.args;
    const Tables tb = tables_of(D(4), e.T, e.W);
    const Py_ssize_t width = 2 * e.T + 1;
    phi = malloc(sizeof(double) * (size_t)e.T);
    if (!phi) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < e.m; i++) {
        const int64_t row = I(2)[i], c = I(3)[i], prev = I(1)[row];
        const double *g = D(0) + row * width;
        paths_before(g, prev, c, e.T, phi);
        if (scores) D(5)[i] = prefix_score(phi, g[2 * e.T], prev, c, &tb);
        else advance_one(phi, g[2 * e.T], prev, c, &tb, D(5) + i * width);
    }
    result = Py_NewRef(Py_None);
done:
    free(phi);
    release(e.args, 6);
    return result;
}

static PyObject *prefix_scores(PyObject *self, PyObject *const *a, Py_ssize_t nargs) {
    (void)self;
    return each_extension(a, nargs, "prefix_scores", 1);
}

PyDoc_STRVAR(advance_doc,
"advance(state, last, rows, tokens, tables, n, m, T, W, out)\n\n"
"The states of g + c for m extensions (prefix rows[i], label tokens[i]) into\n"
"out [m, 2T + 1]: what a beam keeps of each prefix it lets live.");

static PyObject *advance(PyObject *self, PyObject *const *a, Py_ssize_t nargs) {
    (void)self;
    return each_extension(a, nargs, "advance", 0);
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
