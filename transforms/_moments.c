/* One pass of data statistics over a contiguous numeric buffer (transforms/stats.py).
 *
 * moments(values, mask, shift[, missing]) -> (count, nan_count, lo, hi, c, s1, s2)
 *
 *   values  a C-contiguous buffer of one of the formats below (numpy arrays, memoryviews)
 *   mask    None, or a buffer of as many bytes as values has elements: non-zero = missing
 *   shift   a float c, or NaN for the first present value; s1 = sum(x - c) and
 *           s2 = sum((x - c)**2) over the present values, in float64
 *   missing floats only: a value that counts as missing (a fill value, exactly as stored:
 *           the caller passes the stored type's value); NaN (the default) for none
 *
 * Missing: masked elements and, for floats, NaN and ``missing`` (counted in nan_count, nowhere
 * else). lo/hi are
 * the smallest and largest present values as stored (Python int for integers, float for
 * floats), None when nothing is present. The loop runs without the GIL, so threads of one
 * process compute the moments of different slabs on different cores.
 *
 * Formats: f (float32), d (float64), b/B (int8/uint8), h/H (16-bit), i/I (32-bit), l/q
 * (int64). Anything else raises TypeError: the caller computes those with numpy.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Values are taken in blocks: a block without missing values (the usual case) goes through
 * loops the compiler vectorizes (reassociated sums, min/max instructions: "fast-math" for
 * those functions only, with an AVX2 clone picked at load time where the CPU has it); a block
 * with NaN or masked values goes through the scalar loop that skips them. */
#define BLOCK 256

#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
#define FAST __attribute__((optimize("O3", "fast-math"), target_clones("avx2", "default")))
#define PLAIN __attribute__((optimize("O3"), target_clones("avx2", "default")))
#elif defined(__GNUC__) && !defined(__clang__)
#define FAST __attribute__((optimize("O3", "fast-math")))
#define PLAIN __attribute__((optimize("O3")))
#else
#define FAST
#define PLAIN
#endif

typedef struct {
    int64_t count;
    double c, s1, s2;
    double flo, fhi;   /* floats */
    int64_t ilo, ihi;  /* integers */
} Result;

/* No NaN in the block (the caller checked): sums and extremes, vectorized. */
#define FAST_LOOPS(NAME, T)                                                                \
    FAST static void NAME(const T *x, Py_ssize_t n, double c, double *s1, double *s2,     \
                          T *lo, T *hi) {                                                  \
        double a = 0.0, b = 0.0;                                                           \
        T l = *lo, h = *hi;                                                                \
        for (Py_ssize_t i = 0; i < n; i++) {                                               \
            double d = (double)x[i] - c;                                                   \
            a += d;                                                                        \
            b += d * d;                                                                    \
        }                                                                                  \
        for (Py_ssize_t i = 0; i < n; i++) {                                               \
            l = x[i] < l ? x[i] : l;                                                       \
            h = x[i] > h ? x[i] : h;                                                       \
        }                                                                                  \
        *s1 += a;                                                                          \
        *s2 += b;                                                                          \
        *lo = l;                                                                           \
        *hi = h;                                                                           \
    }

/* Whether a block has a missing value (NaN, or equal to miss); exact IEEE comparisons
 * (x == NaN is false: a NaN miss matches nothing more). */
#define ANY_NAN(NAME, T)                                                                   \
    PLAIN static int NAME(const T *x, Py_ssize_t n, double miss) {                         \
        int any = 0;                                                                       \
        for (Py_ssize_t i = 0; i < n; i++) any |= (x[i] != x[i]) | ((double)x[i] == miss); \
        return any;                                                                        \
    }

PLAIN static int any_set(const unsigned char *m, Py_ssize_t n) {
    unsigned char any = 0;
    for (Py_ssize_t i = 0; i < n; i++) any |= m[i];
    return any != 0;
}

/* A float value that is missing: NaN, or equal to miss (compared as double: exact, since
 * miss is the stored type's value). */
#define MISSING(v) ((v) != (v) || (double)(v) == miss)

/* The whole buffer: fast blocks where nothing is missing, the scalar loop elsewhere. */
#define KERNEL(NAME, T, FASTFN, ANYNAN, IS_FLOAT, LO, HI)                                  \
    static void NAME(const T *x, const unsigned char *mask, Py_ssize_t n, double c,       \
                     double miss, Result *r) {                                             \
        T lo = 0, hi = 0;                                                                  \
        Py_ssize_t i = 0;                                                                  \
        for (; i < n; i++) { /* the first present value: lo and hi start there */          \
            if ((mask && mask[i]) || (IS_FLOAT && MISSING(x[i]))) continue;                \
            lo = hi = x[i];                                                                \
            break;                                                                         \
        }                                                                                  \
        if (i == n) return; /* nothing present */                                          \
        if (c != c) /* no shift given: the first value (0 if infinite: inf - inf is NaN) */ \
            c = isfinite((double)lo) ? (double)lo : 0.0;                                    \
        r->c = c;                                                                          \
        double s1 = 0.0, s2 = 0.0;                                                         \
        int64_t count = 0;                                                                 \
        Py_ssize_t block = (mask || IS_FLOAT) ? BLOCK : n; /* only then a block may skip */ \
        for (Py_ssize_t start = i; start < n; start += block) {                            \
            Py_ssize_t len = n - start < block ? n - start : block;                        \
            const T *b = x + start;                                                        \
            const unsigned char *m = mask ? mask + start : NULL;                           \
            if (!(m && any_set(m, len)) && !(IS_FLOAT && ANYNAN(b, len, miss))) {          \
                FASTFN(b, len, c, &s1, &s2, &lo, &hi);                                     \
                count += len;                                                              \
                continue;                                                                  \
            }                                                                              \
            for (Py_ssize_t k = 0; k < len; k++) {                                         \
                T v = b[k];                                                                \
                if ((m && m[k]) || (IS_FLOAT && MISSING(v))) continue;                     \
                double d = (double)v - c;                                                  \
                s1 += d;                                                                   \
                s2 += d * d;                                                               \
                count++;                                                                   \
                lo = v < lo ? v : lo;                                                      \
                hi = v > hi ? v : hi;                                                      \
            }                                                                              \
        }                                                                                  \
        r->count = count;                                                                  \
        r->s1 = s1;                                                                        \
        r->s2 = s2;                                                                        \
        r->LO = lo;                                                                        \
        r->HI = hi;                                                                        \
    }

#define FLOAT_TYPE(SUFFIX, T)                                                              \
    FAST_LOOPS(fast_##SUFFIX, T)                                                           \
    ANY_NAN(any_nan_##SUFFIX, T)                                                           \
    KERNEL(moments_##SUFFIX, T, fast_##SUFFIX, any_nan_##SUFFIX, 1, flo, fhi)

#define INT_TYPE(SUFFIX, T)                                                                \
    FAST_LOOPS(fast_##SUFFIX, T)                                                           \
    KERNEL(moments_##SUFFIX, T, fast_##SUFFIX, no_nan, 0, ilo, ihi)

static inline int no_nan(const void *x, Py_ssize_t n, double miss) { (void)x; (void)n; (void)miss; return 0; }

FLOAT_TYPE(f4, float)
FLOAT_TYPE(f8, double)
INT_TYPE(i1, int8_t)
INT_TYPE(u1, uint8_t)
INT_TYPE(i2, int16_t)
INT_TYPE(u2, uint16_t)
INT_TYPE(i4, int32_t)
INT_TYPE(u4, uint32_t)
INT_TYPE(i8, int64_t)

static PyObject *moments(PyObject *self, PyObject *args) {
    PyObject *values_obj, *mask_obj;
    double c, miss = NAN;
    if (!PyArg_ParseTuple(args, "OOd|d", &values_obj, &mask_obj, &c, &miss)) return NULL;
    Py_buffer values, mask;
    if (PyObject_GetBuffer(values_obj, &values, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    int has_mask = mask_obj != Py_None;
    if (has_mask && PyObject_GetBuffer(mask_obj, &mask, PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&values);
        return NULL;
    }
    PyObject *out = NULL;
    const char *fmt = values.format ? values.format : "B";
    if (*fmt == '=' || *fmt == '<' || *fmt == '@') fmt++; /* native order only (checked below) */
    char code = fmt[1] == '\0' ? fmt[0] : '?';
    Py_ssize_t size = values.itemsize;
    int is_float = code == 'f' || code == 'd';
    void (*kernel)(const void *, const unsigned char *, Py_ssize_t, double, double, Result *) = NULL;
    switch (code) {
        case 'f': if (size == 4) kernel = (void *)moments_f4; break;
        case 'd': if (size == 8) kernel = (void *)moments_f8; break;
        case 'b': kernel = (void *)moments_i1; break;
        case 'B': kernel = (void *)moments_u1; break;
        case 'h': if (size == 2) kernel = (void *)moments_i2; break;
        case 'H': if (size == 2) kernel = (void *)moments_u2; break;
        case 'i': if (size == 4) kernel = (void *)moments_i4; break;
        case 'I': if (size == 4) kernel = (void *)moments_u4; break;
        case 'l': case 'q': if (size == 8) kernel = (void *)moments_i8; break;
    }
    if (kernel == NULL || (values.format && values.format[0] == '>')) {
        PyErr_Format(PyExc_TypeError, "unsupported buffer format %s", values.format ? values.format : "B");
        goto done;
    }
    Py_ssize_t n = values.len / size;
    if (has_mask && mask.len != n) {
        PyErr_SetString(PyExc_ValueError, "mask and values differ in length");
        goto done;
    }
    Result r;
    memset(&r, 0, sizeof r);
    const unsigned char *m = has_mask ? (const unsigned char *)mask.buf : NULL;
    Py_BEGIN_ALLOW_THREADS
    kernel(values.buf, m, n, c, miss, &r);
    Py_END_ALLOW_THREADS
    long long missing = (long long)(n - r.count);
    if (!r.count) {
        out = Py_BuildValue("LLOOddd", 0LL, missing, Py_None, Py_None, c, 0.0, 0.0);
    } else if (is_float) {
        out = Py_BuildValue("LLddddd", (long long)r.count, missing, r.flo, r.fhi, r.c, r.s1, r.s2);
    } else {
        out = Py_BuildValue("LLLLddd", (long long)r.count, missing, (long long)r.ilo, (long long)r.ihi,
                            r.c, r.s1, r.s2);
    }
done:
    PyBuffer_Release(&values);
    if (has_mask) PyBuffer_Release(&mask);
    return out;
}

static PyMethodDef methods[] = {
    {"moments", moments, METH_VARARGS,
     "moments(values, mask, shift[, missing]) -> (count, nan_count, lo, hi, c, s1, s2); see transforms/stats.py"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_moments", .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__moments(void) { return PyModule_Create(&module); }
