/* Exact scores from an fp16 label matrix: fp16 rows widened to fp32, multiplied and summed in fp32.
 *
 * Why C: on CPU neither numpy nor torch has an fp16 x fp32 -> fp32 product. numpy converts fp16 at
 * ~0.4 G values/s and torch's fp16 mv rounds its result to fp16 (~5e-4 error), so the exact path
 * had to keep a second, fp32 copy of every fp16 set (twice the memory, twice the bytes per scan).
 * Widening fp16 is exact, so these scores carry only fp32 rounding, like the fp32 BLAS path's.
 *
 * Two functions, both release the GIL (the caller splits rows across threads):
 *   dot(matrix_f16, queries_f32, out_f32, dim, nq, ld, col0)
 *       out[j * ld + col0 + i] = sum_d queries[j, d] * matrix[i, d]  for every row i, query j
 *   widen(src_f16, dst_f32)   dst[i] = (float) src[i]
 * The vector paths need AVX2, FMA and F16C, or AVX-512F (checked at run time); `vectorised()`
 * says whether this CPU has them. Without them a portable scalar path gives the same values, slowly, and the
 * Python side keeps its numpy path instead.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ZS_X86 1
#include <immintrin.h>
#endif

/* IEEE binary16 -> binary32, exact (normals, subnormals, infinities, NaN). */
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while ((man & 0x400u) == 0);
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static void dot_scalar(const uint16_t *m, Py_ssize_t rows, Py_ssize_t dim, const float *q,
                       Py_ssize_t nq, float *out, Py_ssize_t ld) {
    for (Py_ssize_t i = 0; i < rows; i++) {
        const uint16_t *row = m + i * dim;
        for (Py_ssize_t j = 0; j < nq; j++) {
            const float *qj = q + j * dim;
            float acc = 0.0f;
            for (Py_ssize_t d = 0; d < dim; d++) acc += qj[d] * half_to_float(row[d]);
            out[j * ld + i] = acc;
        }
    }
}

static void widen_scalar(const uint16_t *src, float *dst, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) dst[i] = half_to_float(src[i]);
}

#ifdef ZS_X86
#define ZS_TARGET __attribute__((target("avx2,fma,f16c")))
#define ZS_TARGET512 __attribute__((target("avx512f,avx2,fma,f16c")))
#define ZS_INLINE static inline __attribute__((always_inline))
#define L2_CHUNK_BYTES (256 * 1024) /* rows scored by every query block before the next rows */
#define QBLOCK 8 /* most queries per pass over the rows (each row is read from memory once a pass) */

ZS_TARGET ZS_INLINE float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* One row x NB queries (NB a compile-time constant at every call site, so the accumulators stay
 * in registers). Rows go one at a time, in address order: scoring several rows side by side
 * (four streams 1 KB apart) ran 3-10x slower from memory here, the prefetchers losing the
 * stream. Two accumulators per query halve the FMA dependency chain; the tail is scalar. */
#define ZS_TILE(NAME, TARGET, VEC, LANES, ZERO, LOADH, LOADF, FMA, ADD, HSUM)                   \
    TARGET ZS_INLINE void NAME(const uint16_t *r, Py_ssize_t dim, const float *q, const int nb,  \
                               float *out, Py_ssize_t ld) {                                     \
        const Py_ssize_t pairs = dim - dim % (2 * (LANES));                                     \
        const Py_ssize_t vec = dim - dim % (LANES);                                             \
        VEC even[QBLOCK], odd[QBLOCK];                                                          \
        for (int b = 0; b < nb; b++) even[b] = odd[b] = ZERO;                                   \
        Py_ssize_t d = 0;                                                                       \
        for (; d < pairs; d += 2 * (LANES)) {                                                   \
            VEC x0 = LOADH(r + d), x1 = LOADH(r + d + (LANES));                                 \
            for (int b = 0; b < nb; b++) {                                                      \
                even[b] = FMA(x0, LOADF(q + b * dim + d), even[b]);                             \
                odd[b] = FMA(x1, LOADF(q + b * dim + d + (LANES)), odd[b]);                     \
            }                                                                                   \
        }                                                                                       \
        for (; d < vec; d += (LANES)) {                                                         \
            VEC x0 = LOADH(r + d);                                                              \
            for (int b = 0; b < nb; b++) even[b] = FMA(x0, LOADF(q + b * dim + d), even[b]);    \
        }                                                                                       \
        for (int b = 0; b < nb; b++) {                                                          \
            float s = HSUM(ADD(even[b], odd[b]));                                               \
            for (Py_ssize_t t = vec; t < dim; t++) s += q[b * dim + t] * half_to_float(r[t]);   \
            out[b * ld] = s;                                                                    \
        }                                                                                       \
    }

#define LOADH256(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define LOADH512(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))
ZS_TILE(tile256, ZS_TARGET, __m256, 8, _mm256_setzero_ps(), LOADH256, _mm256_loadu_ps,
        _mm256_fmadd_ps, _mm256_add_ps, hsum256)
ZS_TILE(tile512, ZS_TARGET512, __m512, 16, _mm512_setzero_ps(), LOADH512, _mm512_loadu_ps,
        _mm512_fmadd_ps, _mm512_add_ps, _mm512_reduce_add_ps)

/* Every row for blocks of up to QB queries (each row read once per block): 8 with AVX-512's 32
 * registers (16 accumulators), 4 with AVX2's 16. */
#define ZS_ROWS(NAME, TARGET, TILE, QB)                                                         \
    TARGET ZS_INLINE void NAME##_nb(const uint16_t *m, Py_ssize_t rows, Py_ssize_t dim,          \
                                    const float *q, const int nb, float *out, Py_ssize_t ld) {  \
        for (Py_ssize_t i = 0; i < rows; i++) TILE(m + i * dim, dim, q, nb, out + i, ld);       \
    }                                                                                           \
    TARGET static void NAME(const uint16_t *m, Py_ssize_t rows, Py_ssize_t dim, const float *q, \
                            Py_ssize_t nq, float *out, Py_ssize_t ld) {                         \
        /* Rows in chunks that stay in L2 while every block of queries passes over them, so   \
         * each row comes from memory once whatever the number of queries. */                  \
        const Py_ssize_t chunk = (L2_CHUNK_BYTES) / (2 * dim) > 0 ? (L2_CHUNK_BYTES) / (2 * dim) : 1; \
        for (Py_ssize_t r0 = 0; r0 < rows; r0 += chunk) {                                       \
            const Py_ssize_t nr = rows - r0 < chunk ? rows - r0 : chunk;                        \
            const uint16_t *mr = m + r0 * dim;                                                  \
            for (Py_ssize_t j = 0; j < nq; j += (QB)) {                                         \
                const float *qj = q + j * dim;                                                  \
                float *oj = out + j * ld + r0;                                                  \
                switch (nq - j < (QB) ? (int)(nq - j) : (QB)) {                                 \
                case 1: NAME##_nb(mr, nr, dim, qj, 1, oj, ld); break;                           \
                case 2: NAME##_nb(mr, nr, dim, qj, 2, oj, ld); break;                           \
                case 3: NAME##_nb(mr, nr, dim, qj, 3, oj, ld); break;                           \
                case 4: NAME##_nb(mr, nr, dim, qj, 4, oj, ld); break;                           \
                case 5: NAME##_nb(mr, nr, dim, qj, 5, oj, ld); break;                           \
                case 6: NAME##_nb(mr, nr, dim, qj, 6, oj, ld); break;                           \
                case 7: NAME##_nb(mr, nr, dim, qj, 7, oj, ld); break;                           \
                default: NAME##_nb(mr, nr, dim, qj, 8, oj, ld); break;                          \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    }

ZS_ROWS(dot_avx2, ZS_TARGET, tile256, 4)
ZS_ROWS(dot_avx512, ZS_TARGET512, tile512, 8)

ZS_TARGET static void widen_f16c(const uint16_t *src, float *dst, Py_ssize_t n) {
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    widen_scalar(src + i, dst + i, n - i);
}

/* 0: scalar only, 1: AVX2 + FMA + F16C, 2: AVX-512F as well. */
static int vector_level(void) {
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = 0;
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
            __builtin_cpu_supports("f16c"))
            known = __builtin_cpu_supports("avx512f") ? 2 : 1;
    }
    return known;
}
#else
static int vector_level(void) { return 0; }
#endif

static PyObject *f16scan_dot(PyObject *self, PyObject *args) {
    Py_buffer mat, qry, out;
    Py_ssize_t dim, nq, ld, col0;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*w*nnnn", &mat, &qry, &out, &dim, &nq, &ld, &col0)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t rows = dim > 0 ? mat.len / (2 * dim) : 0;
    if (dim <= 0 || nq <= 0 || mat.len != rows * dim * 2) {
        PyErr_SetString(PyExc_ValueError, "matrix size is not rows * dim fp16 values");
    } else if (qry.len != nq * dim * 4) {
        PyErr_SetString(PyExc_ValueError, "queries size is not nq * dim fp32 values");
    } else if (col0 < 0 || col0 + rows > ld || out.len < ((nq - 1) * ld + col0 + rows) * 4) {
        PyErr_SetString(PyExc_ValueError, "output buffer too small for nq x ld fp32 scores");
    } else {
        const uint16_t *m = (const uint16_t *)mat.buf;
        const float *q = (const float *)qry.buf;
        float *o = (float *)out.buf + col0;
        int vector = vector_level();
        Py_BEGIN_ALLOW_THREADS
#ifdef ZS_X86
        if (vector == 2)
            dot_avx512(m, rows, dim, q, nq, o, ld);
        else if (vector == 1)
            dot_avx2(m, rows, dim, q, nq, o, ld);
        else
#endif
            dot_scalar(m, rows, dim, q, nq, o, ld);
        Py_END_ALLOW_THREADS
        (void)vector;
        result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&mat);
    PyBuffer_Release(&qry);
    PyBuffer_Release(&out);
    return result;
}

static PyObject *f16scan_widen(PyObject *self, PyObject *args) {
    Py_buffer src, dst;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*w*", &src, &dst)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = src.len / 2;
    if (src.len % 2 != 0 || dst.len != n * 4) {
        PyErr_SetString(PyExc_ValueError, "destination must hold one fp32 per fp16 source value");
    } else {
        int vector = vector_level();
        Py_BEGIN_ALLOW_THREADS
#ifdef ZS_X86
        if (vector)
            widen_f16c((const uint16_t *)src.buf, (float *)dst.buf, n);
        else
#endif
            widen_scalar((const uint16_t *)src.buf, (float *)dst.buf, n);
        Py_END_ALLOW_THREADS
        (void)vector;
        result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    return result;
}

static PyObject *f16scan_vectorised(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyBool_FromLong(vector_level() > 0);
}

static PyMethodDef methods[] = {
    {"dot", f16scan_dot, METH_VARARGS,
     "dot(matrix_f16, queries_f32, out_f32, dim, nq, ld, col0): exact fp32 scores of fp16 rows."},
    {"widen", f16scan_widen, METH_VARARGS, "widen(src_f16, dst_f32): exact fp16 -> fp32."},
    {"vectorised", f16scan_vectorised, METH_NOARGS,
     "vectorised() -> True when this CPU runs the AVX2/FMA/F16C paths."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_f16scan", "Exact fp32 scores of fp16 label rows.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__f16scan(void) { return PyModule_Create(&module); }
