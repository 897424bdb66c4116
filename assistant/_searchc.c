/* The decoder's beam search, compiled: one step of it, ranking the live prefixes' extensions
 * (jointly with CTC, by attention alone, or the free decode's one best token), finishing the
 * </s> ones and keeping the best others, and the CTC recursions of the kept ones; the
 * grammar's determinisation the step walks (Determinized); and the word readings of a
 * token sequence (word_paths). Named _ctcstep.c until 2026-12-06, when it held the CTC
 * part alone.
 *
 * Why C and not numpy: a step of the grammar search is ~22 candidates over 12 prefixes and
 * 75 frames, so its numpy version spent most of its time in the fixed cost of some sixty small
 * array operations (~0.3 ms a step, ~1 step per phone token: the p95 of a 3 s command).
 * numba would remove that cost too, but it adds ~60 MB to a daemon held to 80 MB and has no
 * wheels for 32-bit Pi OS; this file needs only a C compiler (build-essential) at install.
 * The beam's bookkeeping (which prefixes finish and which stay, their grammar states and
 * tokens) was Python around the compiled ranking until 2026-12-06: ~0.12 ms a step on an
 * older EPYC, as much as the ranking and the CTC recursions together; here it is a loop over
 * two dozen candidates (search_step), and the finished hypotheses' tokens are read back
 * once, at the end (spell).
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
 * Arrays arrive through the buffer protocol as C-contiguous float64 / float32 / int64 / int32
 * (assistant/ctc.py and assistant/decoder.py prepare them); every size is checked here too, so a wrong call is a ValueError, never a
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

/* The argument count of a fastcall function: -1 with a TypeError when it is not ``want``. */
static int check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t want) {
    if (nargs == want) return 0;
    PyErr_Format(PyExc_TypeError, "%s takes %zd arguments", name, want);
    return -1;
}

/* A C-contiguous buffer of ``count`` items (any number if count < 0) of ``kind`` ('d'
 * float64, 'f' float32, 'q' int64, 'i' int32). */
static int take(PyObject *obj, Arg *arg, char kind, Py_ssize_t count, int writable,
                const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &arg->view, flags) < 0) return -1;
    arg->held = 1;
    const char *fmt = arg->view.format ? arg->view.format : "B";
    if (*fmt == '<' || *fmt == '=' || *fmt == '@') fmt++;
    const Py_ssize_t size = kind == 'f' || kind == 'i' ? 4 : 8;
    int ok = arg->view.itemsize == size &&
             (kind == 'q'   ? (strcmp(fmt, "q") == 0 || strcmp(fmt, "l") == 0)
              : kind == 'i' ? (strcmp(fmt, "i") == 0 || (size == sizeof(long) && *fmt == 'l'))
                            : fmt[0] == kind && fmt[1] == 0);
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "%s: expected %s", name,
                     kind == 'd'   ? "float64"
                     : kind == 'f' ? "float32"
                     : kind == 'i' ? "int32"
                                   : "int64");
        return -1;
    }
    if (count >= 0 && arg->view.len != count * size) {
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

/* ---- the grammar's determinisation ------------------------------------------------------ */

/* Subset construction on demand, over a grammar's token graph in CSR form (arc_start,
 * arc_token, arc_next, int32). State d of the determinisation is a sorted set of graph states;
 * next_ids[d, token] is the state the token leads to, -1 where the grammar forbids it, -2
 * throughout until d is expanded. Sets are kept in one pool and found again through an
 * open-addressing hash table of their ids.
 *
 * Why C: the search meets states no earlier command did at every step of a new command, and
 * expanding one in Python (grouping its arcs by token, a sorted tuple per successor, a dict
 * lookup each) took 10-16 us on an older EPYC, ~3 ms of a slow decode's 17 (2026-12-06). */

#define UNEXPANDED (-2)

typedef struct {
    PyObject_HEAD
    Py_buffer arcs[3]; /* arc_start, arc_token, arc_next */
    int held;
    Py_ssize_t graph_states, n_arcs, V;
    Py_ssize_t n, cap;        /* states, and room for them */
    int64_t *set_off;         /* [cap + 1]: state d's set is pool[set_off[d] .. set_off[d + 1]) */
    int32_t *pool;
    Py_ssize_t pool_len, pool_cap;
    int32_t *next_ids;        /* [cap, V] */
    int32_t *slots;           /* [n_slots]: state ids by hash, -1 empty */
    Py_ssize_t n_slots;
    /* an expansion's scratch: (token's order << 32 | next state) per arc, a token's next
     * states, and [3, V]: each token's order of appearance (-1: none yet), the token of each
     * order, and the state each order leads to */
    int64_t *pairs;
    int32_t *members;
    Py_ssize_t pairs_cap;
    int32_t *scratch;
} Determinized;

static uint64_t set_hash(const int32_t *set, Py_ssize_t len) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a over the ints */
    for (Py_ssize_t i = 0; i < len; i++) {
        h ^= (uint32_t)set[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

static int det_rehash(Determinized *dt, Py_ssize_t n_slots) {
    int32_t *slots = malloc(sizeof(int32_t) * (size_t)n_slots);
    if (!slots) return -1;
    for (Py_ssize_t i = 0; i < n_slots; i++) slots[i] = -1;
    for (Py_ssize_t d = 0; d < dt->n; d++) {
        const int64_t off = dt->set_off[d];
        size_t i = set_hash(dt->pool + off, dt->set_off[d + 1] - off) & (size_t)(n_slots - 1);
        while (slots[i] >= 0) i = (i + 1) & (size_t)(n_slots - 1);
        slots[i] = (int32_t)d;
    }
    free(dt->slots);
    dt->slots = slots;
    dt->n_slots = n_slots;
    return 0;
}

/* The id of a sorted set of graph states, a new state if it is not known yet; -1 on no
 * memory (the error set). */
static Py_ssize_t det_intern(Determinized *dt, const int32_t *set, Py_ssize_t len) {
    size_t mask = (size_t)(dt->n_slots - 1), i = set_hash(set, len) & mask;
    for (; dt->slots[i] >= 0; i = (i + 1) & mask) {
        const int32_t d = dt->slots[i];
        const int64_t off = dt->set_off[d];
        if (dt->set_off[d + 1] - off == len &&
            memcmp(dt->pool + off, set, sizeof(int32_t) * (size_t)len) == 0)
            return d;
    }
    if (dt->n == INT32_MAX - 1) {
        PyErr_SetString(PyExc_OverflowError, "determinisation: too many states");
        return -1;
    }
    if (dt->n == dt->cap) { /* grow by doubling */
        const Py_ssize_t cap = dt->cap ? 2 * dt->cap : 16;
        int64_t *set_off = realloc(dt->set_off, sizeof(int64_t) * (size_t)(cap + 1));
        if (!set_off) goto no_memory;
        dt->set_off = set_off;
        int32_t *next_ids = realloc(dt->next_ids, sizeof(int32_t) * (size_t)(cap * dt->V));
        if (!next_ids) goto no_memory;
        dt->next_ids = next_ids;
        dt->cap = cap;
    }
    if (dt->pool_len + len > dt->pool_cap) {
        Py_ssize_t cap = dt->pool_cap ? 2 * dt->pool_cap : 64;
        while (cap < dt->pool_len + len) cap *= 2;
        int32_t *pool = realloc(dt->pool, sizeof(int32_t) * (size_t)cap);
        if (!pool) goto no_memory;
        dt->pool = pool;
        dt->pool_cap = cap;
    }
    const Py_ssize_t d = dt->n;
    memcpy(dt->pool + dt->pool_len, set, sizeof(int32_t) * (size_t)len);
    dt->set_off[d] = dt->pool_len;
    dt->pool_len += len;
    dt->set_off[d + 1] = dt->pool_len;
    for (Py_ssize_t v = 0; v < dt->V; v++) dt->next_ids[d * dt->V + v] = UNEXPANDED;
    dt->n++;
    dt->slots[i] = (int32_t)d;
    if (2 * dt->n > dt->n_slots && det_rehash(dt, 2 * dt->n_slots)) goto no_memory;
    return d;
no_memory:
    PyErr_NoMemory();
    return -1;
}

static int cmp_int64(const void *a, const void *b) {
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Fills d's row of next_ids, once. Successors are numbered in the order their tokens first
 * appear among d's arcs (graph states ascending, each one's arcs in order), as the Python
 * construction before this one numbered them. 0, or -1 with an error set. */
static int det_expand(Determinized *dt, Py_ssize_t d) {
    if (dt->next_ids[d * dt->V] != UNEXPANDED) return 0;
    const int32_t *arc_start = dt->arcs[0].buf, *arc_token = dt->arcs[1].buf,
                  *arc_next = dt->arcs[2].buf;
    Py_ssize_t m = 0, order = 0;
    for (int64_t k = dt->set_off[d]; k < dt->set_off[d + 1]; k++) {
        const int32_t s = dt->pool[k];
        m += arc_start[s + 1] - arc_start[s];
    }
    if (m > dt->pairs_cap) {
        int64_t *pairs = realloc(dt->pairs, sizeof(int64_t) * (size_t)m);
        if (!pairs) goto no_memory;
        dt->pairs = pairs;
        int32_t *members = realloc(dt->members, sizeof(int32_t) * (size_t)m);
        if (!members) goto no_memory;
        dt->members = members;
        dt->pairs_cap = m;
    }
    int32_t *first_seen = dt->scratch, *token_of = first_seen + dt->V, *found = token_of + dt->V;
    m = 0;
    for (int64_t k = dt->set_off[d]; k < dt->set_off[d + 1]; k++) {
        const int32_t s = dt->pool[k];
        for (int32_t a = arc_start[s]; a < arc_start[s + 1]; a++) {
            const int32_t tok = arc_token[a];
            if (first_seen[tok] < 0) {
                token_of[order] = tok;
                first_seen[tok] = (int32_t)order++;
            }
            dt->pairs[m++] = ((int64_t)first_seen[tok] << 32) | (int64_t)arc_next[a];
        }
    }
    for (Py_ssize_t g = 0; g < order; g++) first_seen[token_of[g]] = -1;
    /* by token (in order of appearance), then by next state: each token's successors, a
     * sorted run, deduplicated into members */
    qsort(dt->pairs, (size_t)m, sizeof(int64_t), cmp_int64);
    for (Py_ssize_t i = 0; i < m;) {
        const int64_t group = dt->pairs[i] >> 32;
        Py_ssize_t len = 0;
        for (; i < m && dt->pairs[i] >> 32 == group; i++) {
            const int32_t nxt = (int32_t)(dt->pairs[i] & 0xffffffff);
            if (len == 0 || dt->members[len - 1] != nxt) dt->members[len++] = nxt;
        }
        const Py_ssize_t id = det_intern(dt, dt->members, len);
        if (id < 0) return -1;
        found[group] = (int32_t)id;
    }
    int32_t *row = dt->next_ids + d * dt->V; /* after interning: the table may have moved */
    for (Py_ssize_t v = 0; v < dt->V; v++) row[v] = -1;
    for (Py_ssize_t g = 0; g < order; g++) row[token_of[g]] = found[g];
    return 0;
no_memory:
    PyErr_NoMemory();
    return -1;
}

static void det_dealloc(Determinized *dt) {
    if (dt->held)
        for (int i = 0; i < 3; i++) PyBuffer_Release(&dt->arcs[i]);
    free(dt->set_off);
    free(dt->pool);
    free(dt->next_ids);
    free(dt->slots);
    free(dt->pairs);
    free(dt->members);
    free(dt->scratch);
    Py_TYPE(dt)->tp_free((PyObject *)dt);
}

static int det_init(Determinized *dt, PyObject *args, PyObject *kwds) {
    static char *names[] = {"arc_start", "arc_token", "arc_next", "vocab_size", "start", NULL};
    PyObject *objs[3];
    Py_ssize_t V, start;
    if (dt->held) {
        PyErr_SetString(PyExc_TypeError, "Determinized is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOnn", names, &objs[0], &objs[1], &objs[2],
                                     &V, &start))
        return -1;
    static const char *arc_names[] = {"arc_start", "arc_token", "arc_next"};
    Arg taken[3];
    memset(taken, 0, sizeof taken);
    for (int i = 0; i < 3; i++)
        if (take(objs[i], &taken[i], 'i', -1, 0, arc_names[i])) {
            release(taken, 3);
            return -1;
        }
    for (int i = 0; i < 3; i++) dt->arcs[i] = taken[i].view;
    dt->held = 1;
    const int32_t *arc_start = dt->arcs[0].buf, *arc_token = dt->arcs[1].buf,
                  *arc_next = dt->arcs[2].buf;
    dt->graph_states = dt->arcs[0].len / 4 - 1;
    dt->n_arcs = dt->arcs[1].len / 4;
    dt->V = V;
    /* Checked once here, so that no expansion reads outside the arrays. */
    if (V < 1 || dt->graph_states < 1 || dt->arcs[2].len / 4 != dt->n_arcs || start < 0 ||
        start >= dt->graph_states || arc_start[0] != 0 ||
        arc_start[dt->graph_states] != dt->n_arcs) {
        PyErr_SetString(PyExc_ValueError, "Determinized: arcs that are no CSR graph");
        return -1;
    }
    for (Py_ssize_t s = 0; s < dt->graph_states; s++)
        if (arc_start[s + 1] < arc_start[s]) {
            PyErr_SetString(PyExc_ValueError, "Determinized: arc_start goes down");
            return -1;
        }
    for (Py_ssize_t a = 0; a < dt->n_arcs; a++)
        if (arc_token[a] < 0 || arc_token[a] >= V || arc_next[a] < 0 ||
            arc_next[a] >= dt->graph_states) {
            PyErr_Format(PyExc_ValueError, "Determinized: arc %zd leads outside the graph", a);
            return -1;
        }
    dt->scratch = malloc(sizeof(int32_t) * (size_t)(3 * V));
    if (!dt->scratch || det_rehash(dt, 64)) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t v = 0; v < V; v++) dt->scratch[v] = -1;
    const int32_t first = (int32_t)start;
    return det_intern(dt, &first, 1) < 0 ? -1 : 0;
}

static int det_state_arg(Determinized *dt, PyObject *arg, Py_ssize_t *d) {
    *d = PyLong_AsSsize_t(arg);
    if (*d == -1 && PyErr_Occurred()) return -1;
    if (*d < 0 || *d >= dt->n) {
        PyErr_Format(PyExc_IndexError, "no state %zd (of %zd)", *d, dt->n);
        return -1;
    }
    return 0;
}

static PyObject *det_expand_py(Determinized *dt, PyObject *arg) {
    Py_ssize_t d;
    if (det_state_arg(dt, arg, &d) || det_expand(dt, d)) return NULL;
    Py_RETURN_NONE;
}

static PyObject *det_next_state(Determinized *dt, PyObject *const *a, Py_ssize_t nargs) {
    Py_ssize_t d;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "next_state(state, token)");
        return NULL;
    }
    if (det_state_arg(dt, a[0], &d)) return NULL;
    const Py_ssize_t tok = PyLong_AsSsize_t(a[1]);
    if (tok == -1 && PyErr_Occurred()) return NULL;
    if (tok < 0 || tok >= dt->V) {
        PyErr_Format(PyExc_IndexError, "no token %zd", tok);
        return NULL;
    }
    if (det_expand(dt, d)) return NULL;
    return PyLong_FromLong(dt->next_ids[d * dt->V + tok]);
}

static PyObject *det_expanded(Determinized *dt, PyObject *arg) {
    Py_ssize_t d;
    if (det_state_arg(dt, arg, &d)) return NULL;
    return PyBool_FromLong(dt->next_ids[d * dt->V] != UNEXPANDED);
}

static PyObject *det_states(Determinized *dt, PyObject *arg) {
    Py_ssize_t d;
    if (det_state_arg(dt, arg, &d)) return NULL;
    const int64_t off = dt->set_off[d], len = dt->set_off[d + 1] - off;
    PyObject *out = PyTuple_New((Py_ssize_t)len);
    if (!out) return NULL;
    for (int64_t i = 0; i < len; i++) {
        PyObject *s = PyLong_FromLong(dt->pool[off + i]);
        if (!s) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, (Py_ssize_t)i, s);
    }
    return out;
}

static PyObject *det_nbytes(Determinized *dt, void *closure) {
    (void)closure;
    const Py_ssize_t bytes = sizeof(int64_t) * (dt->cap + 1) + sizeof(int32_t) * dt->pool_cap +
                             sizeof(int32_t) * dt->cap * dt->V + sizeof(int32_t) * dt->n_slots +
                             12 * dt->pairs_cap + sizeof(int32_t) * 3 * dt->V;
    return PyLong_FromSsize_t(bytes);
}

static Py_ssize_t det_len(Determinized *dt) { return dt->n; }

static PyMethodDef det_methods[] = {
    {"expand", (PyCFunction)det_expand_py, METH_O, "expand(state): fills its next states, once."},
    {"next_state", (PyCFunction)(void (*)(void))det_next_state, METH_FASTCALL,
     "next_state(state, token) -> the state it leads to, -1 where the grammar forbids it."},
    {"expanded", (PyCFunction)det_expanded, METH_O, "expanded(state) -> bool"},
    {"states", (PyCFunction)det_states, METH_O,
     "states(state) -> the graph states it stands for, ascending."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef det_getset[] = {
    {"nbytes", (getter)det_nbytes, NULL, "memory held, in bytes", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods det_sequence = {.sq_length = (lenfunc)det_len};

static PyTypeObject DeterminizedType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "assistant._searchc.Determinized",
    .tp_basicsize = sizeof(Determinized),
    .tp_dealloc = (destructor)det_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Determinized(arc_start, arc_token, arc_next, vocab_size, start): a grammar "
              "graph's determinisation, built on demand; state 0 is {start}.",
    .tp_methods = det_methods,
    .tp_getset = det_getset,
    .tp_as_sequence = &det_sequence,
    .tp_init = (initproc)det_init,
    .tp_new = PyType_GenericNew,
};

/* ---- a token sequence's word readings ---------------------------------------------------- */

/* Depth-first over the graph's paths that spell the tokens, arcs in order, each (state,
 * position) that led to no accepting path remembered as dead. Why C: a long command with
 * numbers meets states with dozens of arcs, and the walk in Python took up to ~1.5 ms a
 * reading, called for each hypothesis the confidence's margins look at (2026-12-06). */

typedef struct {
    const int32_t *arc_start, *arc_token, *arc_next, *arc_word;
    const int64_t *tokens;
    Py_ssize_t n_tokens, final, limit, states, arcs;
    int64_t *dead; /* open-addressing set of state * (n_tokens + 1) + pos, -1 empty */
    Py_ssize_t dead_slots, dead_count;
    int32_t *words; /* the word ids of the path so far */
    Py_ssize_t n_words;
    PyObject *found; /* list of tuples of word ids */
} Walk;

static int dead_has(const Walk *w, int64_t key) {
    size_t mask = (size_t)(w->dead_slots - 1), i = ((uint64_t)key * 0x9E3779B97F4A7C15ULL) >> 20;
    for (i &= mask; w->dead[i] >= 0; i = (i + 1) & mask)
        if (w->dead[i] == key) return 1;
    return 0;
}

static int dead_add(Walk *w, int64_t key) {
    if (2 * (w->dead_count + 1) > w->dead_slots) {
        const Py_ssize_t slots = 2 * w->dead_slots;
        int64_t *grown = malloc(sizeof(int64_t) * (size_t)slots), *old = w->dead;
        if (!grown) return -1;
        for (Py_ssize_t i = 0; i < slots; i++) grown[i] = -1;
        const Py_ssize_t old_slots = w->dead_slots;
        w->dead = grown;
        w->dead_slots = slots;
        w->dead_count = 0;
        for (Py_ssize_t i = 0; i < old_slots; i++)
            if (old[i] >= 0 && dead_add(w, old[i])) {
                free(old);
                return -1;
            }
        free(old);
    }
    size_t mask = (size_t)(w->dead_slots - 1), i = ((uint64_t)key * 0x9E3779B97F4A7C15ULL) >> 20;
    for (i &= mask; w->dead[i] >= 0; i = (i + 1) & mask)
        if (w->dead[i] == key) return 0;
    w->dead[i] = key;
    w->dead_count++;
    return 0;
}

/* 1: an accepting path went through here, 0: none, -1: error set. */
static int walk_from(Walk *w, int32_t state, Py_ssize_t pos) {
    const int64_t key = (int64_t)state * (w->n_tokens + 1) + pos;
    if (PyList_GET_SIZE(w->found) >= w->limit || dead_has(w, key)) return 0;
    if (pos == w->n_tokens) {
        if (state != w->final) return 0;
        PyObject *path = PyTuple_New(w->n_words);
        if (!path) return -1;
        for (Py_ssize_t i = 0; i < w->n_words; i++) {
            PyObject *word = PyLong_FromLong(w->words[i]);
            if (!word) {
                Py_DECREF(path);
                return -1;
            }
            PyTuple_SET_ITEM(path, i, word);
        }
        const int failed = PyList_Append(w->found, path);
        Py_DECREF(path);
        return failed ? -1 : 1;
    }
    const int32_t first = w->arc_start[state], end = w->arc_start[state + 1];
    if (first < 0 || end < first || end > w->arcs) {
        PyErr_Format(PyExc_ValueError, "word_paths: state %d's arcs are outside the graph", state);
        return -1;
    }
    int ok = 0;
    for (int32_t a = first; a < end; a++) {
        if (w->arc_token[a] != w->tokens[pos]) continue;
        if (w->arc_next[a] < 0 || w->arc_next[a] >= w->states) {
            PyErr_Format(PyExc_ValueError, "word_paths: arc %d leads outside the graph", a);
            return -1;
        }
        const int32_t word = w->arc_word[a];
        if (word >= 0) w->words[w->n_words++] = word;
        const int more = walk_from(w, w->arc_next[a], pos + 1);
        if (word >= 0) w->n_words--;
        if (more < 0) return -1;
        ok |= more;
    }
    if (!ok && dead_add(w, key)) {
        PyErr_NoMemory();
        return -1;
    }
    return ok;
}

PyDoc_STRVAR(word_paths_doc,
"word_paths(arc_start, arc_token, arc_next, arc_word, start, final, tokens, limit)\n"
"    -> [tuple of word ids, ...]\n\n"
"The word ids along the first ``limit`` paths from start to final that spell tokens\n"
"(int64), depth first with the arcs in order; arcs without a word have word id -1.");

static PyObject *word_paths(PyObject *self, PyObject *const *a, Py_ssize_t nargs) {
    (void)self;
    if (check_nargs("word_paths", nargs, 8)) return NULL;
    const Py_ssize_t start = PyLong_AsSsize_t(a[4]), final = PyLong_AsSsize_t(a[5]);
    const Py_ssize_t limit = PyLong_AsSsize_t(a[7]);
    if (PyErr_Occurred()) return NULL;
    Arg args[5];
    memset(args, 0, sizeof args);
    static const char *names[] = {"arc_start", "arc_token", "arc_next", "arc_word"};
    PyObject *result = NULL;
    Walk w;
    memset(&w, 0, sizeof w);
    for (int i = 0; i < 4; i++)
        if (take(a[i], &args[i], 'i', -1, 0, names[i])) goto done;
    if (take(a[6], &args[4], 'q', -1, 0, "tokens")) goto done;
    const Py_ssize_t states = args[0].view.len / 4 - 1, arcs = args[1].view.len / 4;
    const int32_t *arc_start = args[0].view.buf, *arc_token = args[1].view.buf,
                  *arc_next = args[2].view.buf;
    /* The walk checks each state it visits and each arc it follows (walk_from), not the
     * whole graph: a call reads a few hundred of its arcs. */
    if (states < 1 || args[2].view.len / 4 != arcs || args[3].view.len / 4 != arcs ||
        start < 0 || start >= states || final < 0 || final >= states || limit < 0 ||
        arc_start[0] != 0 || arc_start[states] != arcs) {
        PyErr_SetString(PyExc_ValueError, "word_paths: arcs that are no CSR graph");
        goto done;
    }
    w = (Walk){arc_start, arc_token, arc_next, args[3].view.buf, args[4].view.buf,
               args[4].view.len / 8, final, limit, states, arcs, NULL, 64, 0, NULL, 0, NULL};
    w.dead = malloc(sizeof(int64_t) * 64);
    w.words = malloc(sizeof(int32_t) * (size_t)(w.n_tokens + 1));
    w.found = PyList_New(0);
    if (!w.dead || !w.words) {
        PyErr_NoMemory();
        goto done;
    }
    if (!w.found) goto done;
    for (Py_ssize_t i = 0; i < 64; i++) w.dead[i] = -1;
    if (walk_from(&w, (int32_t)start, 0) < 0) goto done;
    result = w.found;
    w.found = NULL;
done:
    Py_XDECREF(w.found);
    free(w.dead);
    free(w.words);
    release(args, 5);
    return result;
}

/* ---- one search step ------------------------------------------------------------------ */

PyDoc_STRVAR(step_doc,
"search_step(mode, log_probs, at, dfa, live_i, live_d, ctc_state, tables, T, W, step,\n"
"            n_live, beam, length_penalty, weight, eos, back, fin_i, fin_d, n_fin, rows,\n"
"            tokens) -> (n_live, n_fin, done)\n\n"
"One step of one beam search over a grammar's determinised states (dfa, a Determinized),\n"
"whose live prefixes are rows at .. at + n_live - 1 of the step graph's batch (log_probs\n"
"[batch, V] float32).\n\n"
"mode 0 ranks the extensions (row, token) by (1 - weight) * attention + weight * CTC\n"
"prefix score: each prefix's allowed tokens, or only those scoring at least its beam-th\n"
"best by attention when it allows more; </s> (eos) is scored by CTC with all the prefix's\n"
"paths at the last frame; the best 2 * beam that CTC can align, ties in row-major order.\n"
"mode 1 ranks them by attention alone (the best 2 * beam), mode 2 takes the one best token\n"
"of one prefix (the free decode). An extension's attention log-prob is its prefix's plus\n"
"the step's.\n\n"
"In rank order, a </s> extension finishes: fin_i [cap, 3] gets (step, row, grammar state),\n"
"fin_d [cap, 3] (attention log-prob, joint score over the length to the power\n"
"length_penalty, CTC log-prob or NaN). The first beam others stay live, their grammar\n"
"states expanded. The live beam is double-buffered by the step's parity p: live_i\n"
"[2, 2, beam] (grammar state, last token) and live_d [2, 2, beam] (attention log-prob,\n"
"score) are read from [p] and written to [1 - p], CTC states likewise (ctc_state\n"
"[2, beam, 2T + 1]), and back [steps, 2, beam] records each kept prefix's row and token\n"
"(what spell() reads). rows and tokens ([batch], int64 and int32) get the next step's\n"
"inputs of the live prefixes. done: no prefix is live, or a finished one beats what the\n"
"best live one could reach by ending next.");

typedef struct {
    double joint, att, ctc;
    int64_t row, tok;
} Candidate;

/* Holds the best ``out`` candidates in best[0 .. *count), best first; a tie goes after those
 * already held, as a stable sort of candidates met in row-major order would place it. */
static void hold(Candidate *best, Py_ssize_t *count, Py_ssize_t out, Candidate c) {
    if (*count == out && !(c.joint > best[out - 1].joint)) return;
    Py_ssize_t j = *count < out ? (*count)++ : out - 1;
    while (j > 0 && best[j - 1].joint < c.joint) {
        best[j] = best[j - 1];
        j--;
    }
    best[j] = c;
}

/* A prefix's attention log-probs of its next tokens into att_row [V]: its own plus the step's
 * where the grammar allows the token, -inf elsewhere (numpy's (prefix + step) + mask, the
 * float32 step made double first). */
static void attention_row(double prefix_att, const float *lp, const int32_t *next,
                          Py_ssize_t V, double *att_row) {
    for (Py_ssize_t v = 0; v < V; v++)
        att_row[v] = next[v] >= 0 ? prefix_att + (double)lp[v] : -INFINITY;
}

typedef struct {
    Py_ssize_t V, n, beam;
    const float *log_probs;    /* [n, V]: the live prefixes' rows */
    const int32_t *next_ids;   /* [D, V] */
    const int64_t *dstates, *last;
    const double *att;         /* [n] */
    double *att_row;           /* [V] scratch */
} Live;

/* Mode 0: the joint ranking. phi [n, T] gets each prefix's paths; repeat_phi [T] scratch. */
static Py_ssize_t rank_joint(const Live *lv, const double *state, const Tables *tb,
                             double weight, int64_t eos, double *phi, double *repeat_phi,
                             Candidate *best) {
    const Py_ssize_t T = tb->T, V = lv->V, width = 2 * T + 1, out = 2 * lv->beam;
    for (Py_ssize_t row = 0; row < lv->n; row++) all_paths(state + row * width, T, phi + row * T);
    const Py_ssize_t k = lv->beam < V ? lv->beam : V;
    Py_ssize_t count = 0;
    double top_k[64]; /* the row's k best, descending */
    for (Py_ssize_t row = 0; row < lv->n; row++) {
        const double *g = state + row * width;
        attention_row(lv->att[row], lv->log_probs + row * V, lv->next_ids + lv->dstates[row] * V,
                      V, lv->att_row);
        /* The threshold: the row's k-th best when more than k tokens are allowed. */
        Py_ssize_t allowed = 0, held = 0;
        for (Py_ssize_t v = 0; v < V; v++) {
            const double x = lv->att_row[v];
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
        const int64_t prev = lv->last[row];
        for (Py_ssize_t v = 0; v < V; v++) {
            const double att = lv->att_row[v];
            if (!isfinite(att) || att < bar) continue;
            double ctc;
            if (v == eos) ctc = final_score(g, tb);
            else if (v == prev) {
                paths_before(g, prev, v, T, repeat_phi);
                ctc = prefix_score(repeat_phi, g[2 * T], prev, v, tb);
            } else ctc = prefix_score(phi + row * T, g[2 * T], prev, v, tb);
            hold(best, &count, out, (Candidate){(1 - weight) * att + weight * ctc, att, ctc, row, v});
        }
    }
    /* paths CTC cannot align are no candidates */
    Py_ssize_t ranked = 0;
    for (Py_ssize_t i = 0; i < count; i++)
        if (best[i].joint >= -1e29) best[ranked++] = best[i];
    return ranked;
}

/* Mode 1: the best 2 * beam extensions of all prefixes by attention. */
static Py_ssize_t rank_attention(const Live *lv, Candidate *best) {
    const Py_ssize_t V = lv->V, out = 2 * lv->beam;
    Py_ssize_t count = 0;
    for (Py_ssize_t row = 0; row < lv->n; row++) {
        attention_row(lv->att[row], lv->log_probs + row * V, lv->next_ids + lv->dstates[row] * V,
                      V, lv->att_row);
        for (Py_ssize_t v = 0; v < V; v++)
            if (isfinite(lv->att_row[v]))
                hold(best, &count, out, (Candidate){lv->att_row[v], lv->att_row[v], NAN, row, v});
    }
    return count;
}

/* Mode 2: one prefix's one best token (the first of equals), if the grammar allows any. A
 * CTC score cannot change a choice among one candidate, so none is taken. */
static Py_ssize_t rank_greedy(const Live *lv, Candidate *best) {
    attention_row(lv->att[0], lv->log_probs, lv->next_ids + lv->dstates[0] * lv->V, lv->V,
                  lv->att_row);
    Py_ssize_t top = 0;
    for (Py_ssize_t v = 1; v < lv->V; v++)
        if (lv->att_row[v] > lv->att_row[top]) top = v;
    if (!isfinite(lv->att_row[top])) return 0;
    best[0] = (Candidate){lv->att_row[top], lv->att_row[top], NAN, 0, top};
    return 1;
}

static PyObject *search_step(PyObject *self, PyObject *const *a, Py_ssize_t nargs) {
    (void)self;
    if (check_nargs("search_step", nargs, 22)) return NULL;
    const long mode = PyLong_AsLong(a[0]);
    const Py_ssize_t at = PyLong_AsSsize_t(a[2]);
    const Py_ssize_t T = PyLong_AsSsize_t(a[8]), W = PyLong_AsSsize_t(a[9]);
    const Py_ssize_t step = PyLong_AsSsize_t(a[10]), n = PyLong_AsSsize_t(a[11]);
    const Py_ssize_t beam = PyLong_AsSsize_t(a[12]);
    const double length_penalty = PyFloat_AsDouble(a[13]), weight = PyFloat_AsDouble(a[14]);
    const int64_t eos = PyLong_AsLongLong(a[15]);
    Py_ssize_t n_fin = PyLong_AsSsize_t(a[19]);
    if (PyErr_Occurred()) return NULL;
    if (mode < 0 || mode > 2 || beam < 1 || beam > 32 || n < 1 || n > beam || step < 0 ||
        n_fin < 0 || at < 0 || T < 1 || W < 2 || eos < 0 || (mode == 2 && (beam != 1))) {
        PyErr_SetString(PyExc_ValueError, "search_step: bad sizes");
        return NULL;
    }
    Arg args[11];
    memset(args, 0, sizeof args);
    PyObject *result = NULL;
    double *scratch = NULL;
    Candidate *best = NULL;
    /* Sizes read from the arrays themselves, then checked against each other. */
    if (!PyObject_TypeCheck(a[3], &DeterminizedType)) {
        PyErr_SetString(PyExc_TypeError, "search_step: grammar states must be a Determinized");
        return NULL;
    }
    Determinized *dt = (Determinized *)a[3];
    if (take(a[1], &args[0], 'f', -1, 0, "log_probs") ||
        take(a[16], &args[6], 'q', -1, 1, "back") ||
        take(a[17], &args[7], 'q', -1, 1, "fin_i") ||
        take(a[20], &args[8], 'q', -1, 1, "rows"))
        goto done;
    const Py_ssize_t batch = args[8].view.len / 8;
    const Py_ssize_t V = batch > 0 ? args[0].view.len / 4 / batch : 0;
    const Py_ssize_t steps = args[6].view.len / 8 / (2 * beam);
    const Py_ssize_t cap = args[7].view.len / 8 / 3;
    const Py_ssize_t width = mode == 0 ? 2 * T + 1 : 1;
    if (V < 2 || eos >= V || V * batch * 4 != args[0].view.len || V != dt->V ||
        at + beam > batch || step >= steps ||
        (mode == 0 && W < V + 1)) {
        PyErr_SetString(PyExc_ValueError, "search_step: arrays do not fit each other");
        goto done;
    }
    if (take(a[4], &args[2], 'q', 2 * 2 * beam, 1, "live_i") ||
        take(a[5], &args[3], 'd', 2 * 2 * beam, 1, "live_d") ||
        take(a[6], &args[4], 'd', 2 * beam * width, 1, "ctc_state") ||
        take(a[7], &args[5], 'd', mode == 0 ? tables_size(T, W) : 1, 0, "tables") ||
        take(a[18], &args[9], 'd', 3 * cap, 1, "fin_d") ||
        take(a[21], &args[10], 'i', batch, 1, "tokens"))
        goto done;
    const Py_ssize_t p = step % 2;
    int64_t *live_i = I(2);
    const int64_t *dstates = live_i + p * 2 * beam, *last = dstates + beam;
    int64_t *dstates_out = live_i + (1 - p) * 2 * beam, *last_out = dstates_out + beam;
    const double *att = D(3) + p * 2 * beam;
    double *att_out = D(3) + (1 - p) * 2 * beam, *score_out = att_out + beam;
    const double *state = D(4) + p * beam * width;
    double *state_out = D(4) + (1 - p) * beam * width;
    for (Py_ssize_t i = 0; i < n; i++)
        if (dstates[i] < 0 || dstates[i] >= dt->n || dt->next_ids[dstates[i] * V] == UNEXPANDED) {
            PyErr_SetString(PyExc_ValueError, "search_step: a live prefix's grammar state is "
                                              "unknown or not expanded");
            goto done;
        }
    scratch = malloc(sizeof(double) * (size_t)(n * T + T + V));
    best = malloc(sizeof(Candidate) * (size_t)(2 * beam));
    if (!scratch || !best) {
        PyErr_NoMemory();
        goto done;
    }
    double *phi = scratch, *repeat_phi = phi + n * T;
    /* (no state is expanded while ranking: next_ids stays where it is) */
    const Live lv = {V, n, beam, F(0) + at * V, dt->next_ids, dstates, last, att, repeat_phi + T};
    const Tables tb = tables_of(D(5), T, W);
    Py_ssize_t count;
    if (mode == 0) count = rank_joint(&lv, state, &tb, weight, eos, phi, repeat_phi, best);
    else if (mode == 1) count = rank_attention(&lv, best);
    else count = rank_greedy(&lv, best);

    int64_t *back_row = I(6) + step * 2 * beam, *back_tok = back_row + beam;
    int64_t *fin_i = I(7);
    double *fin_d = D(9);
    int64_t *rows = I(8);
    int32_t *tokens = (int32_t *)args[10].view.buf;
    Py_ssize_t live = 0;
    const double end_length = pow((double)(step + 1), length_penalty);
    for (Py_ssize_t i = 0; i < count; i++) {
        const Candidate *c = &best[i];
        if (c->tok == eos) {
            if (n_fin == cap) {
                PyErr_SetString(PyExc_ValueError, "search_step: fin_i is full");
                goto done;
            }
            fin_i[3 * n_fin] = step;
            fin_i[3 * n_fin + 1] = c->row;
            fin_i[3 * n_fin + 2] = dstates[c->row];
            fin_d[3 * n_fin] = c->att;
            fin_d[3 * n_fin + 1] = c->joint / end_length;
            fin_d[3 * n_fin + 2] = c->ctc;
            n_fin++;
        } else if (live < beam) {
            const int64_t row = c->row, prev = last[row];
            const int32_t nxt = dt->next_ids[dstates[row] * V + c->tok];
            /* its next states now, as the next step will read them (expanding may move
             * next_ids) */
            if (det_expand(dt, nxt)) {
                goto done;
            }
            dstates_out[live] = nxt;
            last_out[live] = c->tok;
            att_out[live] = c->att;
            score_out[live] = c->joint;
            back_row[live] = row;
            back_tok[live] = c->tok;
            if (mode == 0) {
                const double *g = state + row * width;
                const double *before = phi + row * T;
                if (c->tok == prev) {
                    paths_before(g, prev, c->tok, T, repeat_phi);
                    before = repeat_phi;
                }
                advance_one(before, g[2 * T], prev, c->tok, &tb, state_out + live * width);
            }
            live++;
        }
    }
    /* Stop once a finished hypothesis beats what the best live one (the first: the beam is
     * kept best first) could reach by ending now. */
    int done = live == 0;
    if (!done && n_fin > 0) {
        double top = fin_d[1];
        for (Py_ssize_t f = 1; f < n_fin; f++)
            if (fin_d[3 * f + 1] > top) top = fin_d[3 * f + 1];
        done = top > score_out[0] / pow((double)(step + 2), length_penalty);
    }
    if (!done)
        for (Py_ssize_t i = 0; i < live; i++) {
            rows[at + i] = at + back_row[i];
            tokens[at + i] = (int32_t)back_tok[i];
        }
    result = Py_BuildValue("(nni)", live, n_fin, done);
done:
    free(scratch);
    free(best);
    release(args, 11);
    return result;
}

PyDoc_STRVAR(spell_doc,
"spell(back, beam, fin_i, n_fin, eos, out)\n\n"
"The tokens of the n_fin finished hypotheses (fin_i rows: step, row, grammar state), each\n"
"its prefix's tokens read back through back [steps, 2, beam] (row, token of each kept\n"
"prefix) and </s>, into out [n_fin, steps + 1] int64: hypothesis f has fin_i[f, 0] + 1.");

static PyObject *spell(PyObject *self, PyObject *const *a, Py_ssize_t nargs) {
    (void)self;
    if (check_nargs("spell", nargs, 6)) return NULL;
    const Py_ssize_t beam = PyLong_AsSsize_t(a[1]), n_fin = PyLong_AsSsize_t(a[3]);
    const int64_t eos = PyLong_AsLongLong(a[4]);
    if (PyErr_Occurred()) return NULL;
    if (beam < 1 || n_fin < 0) {
        PyErr_SetString(PyExc_ValueError, "spell: bad sizes");
        return NULL;
    }
    Arg args[3];
    memset(args, 0, sizeof args);
    PyObject *result = NULL;
    if (take(a[0], &args[0], 'q', -1, 0, "back") || take(a[2], &args[1], 'q', -1, 0, "fin_i"))
        goto done;
    const Py_ssize_t steps = args[0].view.len / 8 / (2 * beam);
    if (steps * 2 * beam * 8 != args[0].view.len || args[1].view.len < 3 * n_fin * 8) {
        PyErr_SetString(PyExc_ValueError, "spell: arrays do not fit each other");
        goto done;
    }
    if (take(a[5], &args[2], 'q', n_fin * (steps + 1), 1, "out")) goto done;
    const int64_t *back = I(0), *fin_i = I(1);
    int64_t *out = I(2);
    for (Py_ssize_t f = 0; f < n_fin; f++) {
        const int64_t end = fin_i[3 * f];
        int64_t row = fin_i[3 * f + 1];
        if (end < 0 || end >= steps) {
            PyErr_SetString(PyExc_ValueError, "spell: a step outside back");
            goto done;
        }
        int64_t *tokens = out + f * (steps + 1);
        tokens[end] = eos;
        for (int64_t s = end - 1; s >= 0; s--) {
            if (row < 0 || row >= beam) {
                PyErr_SetString(PyExc_ValueError, "spell: a row outside the beam");
                goto done;
            }
            tokens[s] = back[(s * 2 + 1) * beam + row];
            row = back[s * 2 * beam + row];
        }
    }
    result = Py_NewRef(Py_None);
done:
    release(args, 3);
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
    if (check_nargs(name, nargs, 10)) return -1;
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
    {"search_step", (PyCFunction)(void (*)(void))search_step, METH_FASTCALL, step_doc},
    {"spell", (PyCFunction)(void (*)(void))spell, METH_FASTCALL, spell_doc},
    {"word_paths", (PyCFunction)(void (*)(void))word_paths, METH_FASTCALL, word_paths_doc},
    {"prefix_scores", (PyCFunction)(void (*)(void))prefix_scores, METH_FASTCALL, scores_doc},
    {"advance", (PyCFunction)(void (*)(void))advance, METH_FASTCALL, advance_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_searchc",
    .m_doc = "The decoder's beam search, compiled: its step (with the CTC prefix scores), the "
             "grammar's determinisation and a token sequence's word readings (see "
             "assistant/decoder.py, assistant/ctc.py, assistant/grammar.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__searchc(void) {
    if (PyType_Ready(&DeterminizedType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&DeterminizedType);
    if (PyModule_AddObject(m, "Determinized", (PyObject *)&DeterminizedType) < 0) {
        Py_DECREF(&DeterminizedType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
