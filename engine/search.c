/* search.c - the in-memory segment index, retrieval and grounding (see search.h
 * for the storage, the scoring and moment rules).
 *
 * The first-pass kernels are hand-written SIMD rather than BLAS calls: BLAS has
 * no int8 x float or fp16 x float matrix-vector product, and the pass is bound
 * by memory traffic, which only a smaller storage type reduces. Each kernel
 * exists in plain C and, on x86, for AVX2 + FMA (+ F16C) and for AVX-512F,
 * compiled with target attributes and chosen at run time (the widest the CPU
 * has), so the build stays portable. */
#define _XOPEN_SOURCE 700
#include "search.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../base/half.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define MD_SEARCH_X86 1
#endif

typedef struct vid_entry {
    long long video_id; /* 0: empty slot, -1: removed */
    int *rows;          /* row indices, sorted by seq */
    int n, cap;
} vid_entry;

struct md_index {
    int dim;
    int threads; /* for one search's first pass */
    pthread_rwlock_t lock;
    uint16_t *h16; /* n x dim halves: the stored vectors */
    int8_t *q8;    /* n x dim: h16 quantised per row for the first pass */
    float *scale;  /* per row: h16 ~ q8 * scale */
    long long *vid, *t0, *t1;
    int *seq;
    size_t n, cap;
    vid_entry *tab; /* open addressing, linear probing, capacity a power of two */
    size_t tab_cap, tab_used;
    float *scratch; /* dim floats for md_index_add, under the write lock */
};

/* A thread of the first pass gets at least this many values to scan (4 MB of
 * int8): below it, starting a thread costs more than it saves. */
#define MIN_VALUES_PER_THREAD (1u << 22)
#define MAX_THREADS 16
/* Values per chunk of the first pass that a thread takes at a time (1 MB of int8). */
#define CHUNK_VALUES (1u << 20)
/* At least this many candidates are re-scored exactly (and grown into moments) per search. */
#define MIN_CANDIDATES 256

md_search_params md_search_default_params(void)
{
    md_search_params p = {.k = 10, .offset = 0, .min_score = -1.0f, .scan = MD_SCAN_INT8};
    return p;
}

md_ground_params md_ground_default_params(void)
{
    md_ground_params p = {.top_n = 5, .sigma = 1.0f, .nms_iou = 0.5f, .with_curve = 0};
    return p;
}

static float z_needed(long long n)
{
    float z = n > 1 ? sqrtf(2.0f * logf((float)n)) : 0;
    return z > 3.0f ? z : 3.0f;
}

/* ---- kernels ------------------------------------------------------------ */

typedef struct kernels {
    const char *name;
    /* out[r] = scale[r] * sum_i q[i] * rows[r dim + i] for r < n */
    void (*scan_i8)(const float *q, const int8_t *rows, const float *scale, size_t n, int dim, float *out);
    /* out[r] = sum_i q[i] * half(rows[r dim + i]) for r < n. Each row is summed
     * the same way alone or in a block, so a segment's exact score does not
     * depend on how it was reached. */
    void (*scan_f16)(const float *q, const uint16_t *rows, size_t n, int dim, float *out);
    /* Conversions, rounding to nearest even like md_f32_to_f16 (finite input only). */
    void (*to_f16)(const float *src, uint16_t *dst, int n);
    void (*from_f16)(const uint16_t *src, float *dst, int n);
} kernels;

/* Plain C: eight partial sums, which compilers vectorise at -O2. */
static void scan_i8_c(const float *q, const int8_t *rows, const float *scale, size_t n, int dim, float *out)
{
    for (size_t r = 0; r < n; r++) {
        const int8_t *p = rows + r * (size_t)dim;
        float acc[8] = {0};
        int i = 0;
        for (; i + 8 <= dim; i += 8)
            for (int j = 0; j < 8; j++)
                acc[j] += q[i + j] * (float)p[i + j];
        float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        for (; i < dim; i++)
            s += q[i] * (float)p[i];
        out[r] = s * scale[r];
    }
}

static void scan_f16_c(const float *q, const uint16_t *rows, size_t n, int dim, float *out)
{
    for (size_t r = 0; r < n; r++) {
        const uint16_t *p = rows + r * (size_t)dim;
        float acc[8] = {0};
        int i = 0;
        for (; i + 8 <= dim; i += 8)
            for (int j = 0; j < 8; j++)
                acc[j] += q[i + j] * md_f16_to_f32(p[i + j]);
        float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        for (; i < dim; i++)
            s += q[i] * md_f16_to_f32(p[i]);
        out[r] = s;
    }
}

static void to_f16_c(const float *src, uint16_t *dst, int n)
{
    for (int i = 0; i < n; i++)
        dst[i] = md_f32_to_f16(src[i]);
}

static void from_f16_c(const uint16_t *src, float *dst, int n)
{
    for (int i = 0; i < n; i++)
        dst[i] = md_f16_to_f32(src[i]);
}

static const kernels k_scalar = {"scalar", scan_i8_c, scan_f16_c, to_f16_c, from_f16_c};

#ifdef MD_SEARCH_X86
__attribute__((target("avx2,fma"))) static inline float hsum_avx2(__m256 a0, __m256 a1, __m256 a2, __m256 a3)
{
    __m256 v = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Four independent accumulators: one FMA chain per row would wait on the FMA
 * latency instead of on memory. */
__attribute__((target("avx2,fma"))) static void scan_i8_avx2(const float *q, const int8_t *rows, const float *scale,
                                                            size_t n, int dim, float *out)
{
    const int d32 = dim & ~31;
    for (size_t r = 0; r < n; r++) {
        const int8_t *p = rows + r * (size_t)dim;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        int i = 0;
        for (; i < d32; i += 32) {
            __m128i b0 = _mm_loadu_si128((const __m128i *)(p + i)), b1 = _mm_loadu_si128((const __m128i *)(p + i + 16));
            a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b0)), _mm256_loadu_ps(q + i), a0);
            a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b0, 8))),
                                 _mm256_loadu_ps(q + i + 8), a1);
            a2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b1)), _mm256_loadu_ps(q + i + 16), a2);
            a3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b1, 8))),
                                 _mm256_loadu_ps(q + i + 24), a3);
        }
        float s = hsum_avx2(a0, a1, a2, a3);
        for (; i < dim; i++)
            s += q[i] * (float)p[i];
        out[r] = s * scale[r];
    }
}

__attribute__((target("avx2,fma,f16c"))) static void scan_f16_avx2(const float *q, const uint16_t *rows, size_t n,
                                                                  int dim, float *out)
{
    const int d32 = dim & ~31;
    for (size_t r = 0; r < n; r++) {
        const uint16_t *p = rows + r * (size_t)dim;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        int i = 0;
        for (; i < d32; i += 32) {
            a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + i))), _mm256_loadu_ps(q + i), a0);
            a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + i + 8))),
                                 _mm256_loadu_ps(q + i + 8), a1);
            a2 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + i + 16))),
                                 _mm256_loadu_ps(q + i + 16), a2);
            a3 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + i + 24))),
                                 _mm256_loadu_ps(q + i + 24), a3);
        }
        float s = hsum_avx2(a0, a1, a2, a3);
        for (; i < dim; i++)
            s += q[i] * md_f16_to_f32(p[i]);
        out[r] = s;
    }
}

/* F16C rounds to nearest even, subnormals included, exactly as md_f32_to_f16. */
__attribute__((target("avx2,f16c"))) static void to_f16_f16c(const float *src, uint16_t *dst, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        dst[i] = md_f32_to_f16(src[i]);
}

__attribute__((target("avx2,f16c"))) static void from_f16_f16c(const uint16_t *src, float *dst, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++)
        dst[i] = md_f16_to_f32(src[i]);
}

static const kernels k_avx2 = {"avx2", scan_i8_avx2, scan_f16_avx2, to_f16_f16c, from_f16_f16c};

/* AVX-512: the same sums 16 lanes wide, a sixth fewer cycles per row than AVX2
 * where the scan is not yet waiting on memory alone (one core, or a busy one). */
__attribute__((target("avx512f"))) static void scan_i8_avx512(const float *q, const int8_t *rows, const float *scale,
                                                              size_t n, int dim, float *out)
{
    const int d64 = dim & ~63, d16 = dim & ~15;
    for (size_t r = 0; r < n; r++) {
        const int8_t *p = rows + r * (size_t)dim;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        int i = 0;
        for (; i < d64; i += 64) {
            a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + i)))),
                                 _mm512_loadu_ps(q + i), a0);
            a1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + i + 16)))),
                                 _mm512_loadu_ps(q + i + 16), a1);
            a2 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + i + 32)))),
                                 _mm512_loadu_ps(q + i + 32), a2);
            a3 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + i + 48)))),
                                 _mm512_loadu_ps(q + i + 48), a3);
        }
        for (; i < d16; i += 16)
            a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + i)))),
                                 _mm512_loadu_ps(q + i), a0);
        float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
        for (; i < dim; i++)
            s += q[i] * (float)p[i];
        out[r] = s * scale[r];
    }
}

__attribute__((target("avx512f"))) static void scan_f16_avx512(const float *q, const uint16_t *rows, size_t n, int dim,
                                                               float *out)
{
    const int d64 = dim & ~63, d16 = dim & ~15;
    for (size_t r = 0; r < n; r++) {
        const uint16_t *p = rows + r * (size_t)dim;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        int i = 0;
        for (; i < d64; i += 64) {
            a0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + i))), _mm512_loadu_ps(q + i),
                                 a0);
            a1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + i + 16))),
                                 _mm512_loadu_ps(q + i + 16), a1);
            a2 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + i + 32))),
                                 _mm512_loadu_ps(q + i + 32), a2);
            a3 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + i + 48))),
                                 _mm512_loadu_ps(q + i + 48), a3);
        }
        for (; i < d16; i += 16)
            a0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + i))), _mm512_loadu_ps(q + i),
                                 a0);
        float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
        for (; i < dim; i++)
            s += q[i] * md_f16_to_f32(p[i]);
        out[r] = s;
    }
}

static const kernels k_avx512 = {"avx512", scan_i8_avx512, scan_f16_avx512, to_f16_f16c, from_f16_f16c};

static int have_avx2(void)
{
    /* F16C through cpuid: not every compiler's __builtin_cpu_supports knows it
     * (clang 14 does not). The AVX2 check already covers the OS saving YMM. */
    unsigned a, b, c, d;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __get_cpuid(1, &a, &b, &c, &d) &&
           (c & bit_F16C);
}

static int have_avx512(void) /* its table also uses the AVX2 + F16C conversions */
{
    return have_avx2() && __builtin_cpu_supports("avx512f");
}
#endif

static const kernels *g_kern;
static pthread_once_t g_kern_once = PTHREAD_ONCE_INIT;

static void pick_kernels(void)
{
    const kernels *k = &k_scalar;
#ifdef MD_SEARCH_X86
    if (have_avx512())
        k = &k_avx512;
    else if (have_avx2())
        k = &k_avx2;
#endif
    __atomic_store_n(&g_kern, k, __ATOMIC_RELEASE);
}

static const kernels *kern(void)
{
    pthread_once(&g_kern_once, pick_kernels);
    return __atomic_load_n(&g_kern, __ATOMIC_ACQUIRE);
}

const char *md_search_kernel(void) { return kern()->name; }

md_status md_search_set_kernel(const char *name)
{
    const kernels *k = NULL;
    kern();
    if (name && strcmp(name, "scalar") == 0)
        k = &k_scalar;
#ifdef MD_SEARCH_X86
    else if (name && strcmp(name, "avx2") == 0 && have_avx2())
        k = &k_avx2;
    else if (name && strcmp(name, "avx512") == 0 && have_avx512())
        k = &k_avx512;
#endif
    if (!k)
        return MD_ERR_UNSUPPORTED;
    __atomic_store_n(&g_kern, k, __ATOMIC_RELEASE);
    return MD_OK;
}

/* ---- the video table --------------------------------------------------- */

static size_t slot_of(long long id, size_t cap)
{
    uint64_t h = (uint64_t)id * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 17) & (cap - 1);
}

static vid_entry *find_video(md_index *ix, long long id)
{
    if (!ix->tab_cap)
        return NULL;
    for (size_t i = slot_of(id, ix->tab_cap), k = 0; k < ix->tab_cap; i = (i + 1) & (ix->tab_cap - 1), k++) {
        if (ix->tab[i].video_id == id)
            return &ix->tab[i];
        if (ix->tab[i].video_id == 0)
            return NULL;
    }
    return NULL;
}

static md_status grow_table(md_index *ix)
{
    size_t ncap = ix->tab_cap ? ix->tab_cap * 2 : 64;
    vid_entry *nt = calloc(ncap, sizeof *nt);
    if (!nt)
        return MD_ERR_NOMEM;
    size_t used = 0;
    for (size_t i = 0; i < ix->tab_cap; i++) {
        vid_entry *e = &ix->tab[i];
        if (e->video_id <= 0)
            continue;
        size_t j = slot_of(e->video_id, ncap);
        while (nt[j].video_id)
            j = (j + 1) & (ncap - 1);
        nt[j] = *e;
        used++;
    }
    free(ix->tab);
    ix->tab = nt;
    ix->tab_cap = ncap;
    ix->tab_used = used;
    return MD_OK;
}

static md_status get_or_add_video(md_index *ix, long long id, vid_entry **out)
{
    if ((*out = find_video(ix, id)))
        return MD_OK;
    if ((ix->tab_used + 1) * 2 > ix->tab_cap) {
        md_status s = grow_table(ix);
        if (s != MD_OK)
            return s;
    }
    size_t i = slot_of(id, ix->tab_cap);
    while (ix->tab[i].video_id > 0)
        i = (i + 1) & (ix->tab_cap - 1);
    if (ix->tab[i].video_id == 0)
        ix->tab_used++;
    ix->tab[i] = (vid_entry){.video_id = id};
    *out = &ix->tab[i];
    return MD_OK;
}

/* Position of SEQ in E's rows, or the insertion point as -(pos + 1). */
static int find_seq(const md_index *ix, const vid_entry *e, int seq)
{
    int lo = 0, hi = e->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, s = ix->seq[e->rows[mid]];
        if (s == seq)
            return mid;
        if (s < seq)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -(lo + 1);
}

/* ---- lifecycle --------------------------------------------------------- */

static int online_cpus(void)
{
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c < 1 ? 1 : c > MAX_THREADS ? MAX_THREADS : (int)c;
}

md_status md_index_new(int dim, md_index **out)
{
    *out = NULL;
    if (dim <= 0 || dim > 65536)
        return MD_ERR_INVALID;
    md_index *ix = calloc(1, sizeof *ix);
    if (!ix)
        return MD_ERR_NOMEM;
    ix->dim = dim;
    ix->threads = online_cpus();
    if (!(ix->scratch = malloc((size_t)dim * sizeof *ix->scratch))) {
        free(ix);
        return MD_ERR_NOMEM;
    }
    pthread_rwlock_init(&ix->lock, NULL);
    *out = ix;
    return MD_OK;
}

void md_index_free(md_index *ix)
{
    if (!ix)
        return;
    for (size_t i = 0; i < ix->tab_cap; i++)
        free(ix->tab[i].rows);
    free(ix->tab);
    free(ix->h16);
    free(ix->q8);
    free(ix->scale);
    free(ix->vid);
    free(ix->t0);
    free(ix->t1);
    free(ix->seq);
    free(ix->scratch);
    pthread_rwlock_destroy(&ix->lock);
    free(ix);
}

int md_index_dim(const md_index *ix) { return ix->dim; }

int md_index_set_threads(md_index *ix, int n)
{
    n = n <= 0 ? online_cpus() : n > MAX_THREADS ? MAX_THREADS : n;
    __atomic_store_n(&ix->threads, n, __ATOMIC_RELAXED);
    return n;
}

long long md_index_count(md_index *ix)
{
    pthread_rwlock_rdlock(&ix->lock);
    long long n = (long long)ix->n;
    pthread_rwlock_unlock(&ix->lock);
    return n;
}

/* Bytes per row: halves, int8, scale, video, times, seq. */
static size_t row_bytes(const md_index *ix)
{
    return (size_t)ix->dim * (sizeof(uint16_t) + sizeof(int8_t)) + sizeof(float) + 3 * sizeof(long long) +
           sizeof(int);
}

size_t md_index_bytes(md_index *ix)
{
    pthread_rwlock_rdlock(&ix->lock);
    size_t b = ix->cap * row_bytes(ix) + ix->tab_cap * sizeof(vid_entry);
    for (size_t i = 0; i < ix->tab_cap; i++)
        b += (size_t)ix->tab[i].cap * sizeof(int);
    pthread_rwlock_unlock(&ix->lock);
    return b;
}

md_status md_index_lookup(md_index *ix, long long video_id, long long t_ms, float *emb, long long *start_ms,
                          long long *end_ms)
{
    md_status s = MD_ERR_NOT_FOUND;
    pthread_rwlock_rdlock(&ix->lock);
    const vid_entry *e = find_video(ix, video_id);
    int best = -1;
    for (int i = 0; e && i < e->n; i++)
        if (ix->t0[e->rows[i]] <= t_ms)
            best = e->rows[i];
    if (best >= 0 && t_ms <= ix->t1[best]) {
        kern()->from_f16(ix->h16 + (size_t)best * ix->dim, emb, ix->dim);
        if (start_ms)
            *start_ms = ix->t0[best];
        if (end_ms)
            *end_ms = ix->t1[best];
        s = MD_OK;
    }
    pthread_rwlock_unlock(&ix->lock);
    return s;
}

int md_index_video_segments(md_index *ix, long long video_id)
{
    pthread_rwlock_rdlock(&ix->lock);
    vid_entry *e = find_video(ix, video_id);
    int n = e ? e->n : 0;
    pthread_rwlock_unlock(&ix->lock);
    return n;
}

static md_status grow_rows(md_index *ix)
{
    size_t nc = ix->cap ? ix->cap * 2 : 1024, d = (size_t)ix->dim;
    /* Each array is replaced as soon as it has grown, so a failure half way
     * leaves every array at least ix->cap long and the index consistent. */
    uint16_t *h = realloc(ix->h16, nc * d * sizeof *h);
    if (!h)
        return MD_ERR_NOMEM;
    ix->h16 = h;
    int8_t *q = realloc(ix->q8, nc * d);
    if (!q)
        return MD_ERR_NOMEM;
    ix->q8 = q;
    float *f = realloc(ix->scale, nc * sizeof *f);
    if (!f)
        return MD_ERR_NOMEM;
    ix->scale = f;
    long long *a = realloc(ix->vid, nc * sizeof *a);
    if (!a)
        return MD_ERR_NOMEM;
    ix->vid = a;
    if (!(a = realloc(ix->t0, nc * sizeof *a)))
        return MD_ERR_NOMEM;
    ix->t0 = a;
    if (!(a = realloc(ix->t1, nc * sizeof *a)))
        return MD_ERR_NOMEM;
    ix->t1 = a;
    int *s = realloc(ix->seq, nc * sizeof *s);
    if (!s)
        return MD_ERR_NOMEM;
    ix->seq = s;
    ix->cap = nc;
    return MD_OK;
}

/* Writes ROW's int8 copy from X, its halves as floats: symmetric, one scale
 * per row, so the largest value maps to +-127 and every value is off by at
 * most scale/2. */
static void quantise_row(md_index *ix, size_t row, const float *x)
{
    int8_t *q = ix->q8 + row * (size_t)ix->dim;
    float mx = 0;
    for (int i = 0; i < ix->dim; i++) {
        float a = fabsf(x[i]);
        mx = a > mx ? a : mx;
    }
    float inv = mx > 0 ? 127.0f / mx : 0;
    for (int i = 0; i < ix->dim; i++) {
        float v = rintf(x[i] * inv);
        q[i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
    }
    ix->scale[row] = mx / 127.0f;
}

/* Adds or replaces a row from F (floats) or H (halves); exactly one is set. */
static md_status add_row(md_index *ix, long long video_id, int seq, long long start_ms, long long end_ms,
                         const float *f, const uint16_t *h)
{
    if (video_id <= 0 || seq < 0 || end_ms < start_ms)
        return MD_ERR_INVALID;
    for (int i = 0; i < ix->dim; i++) /* checked before anything changes */
        if (f ? !(fabsf(f[i]) <= 65504.0f) : (h[i] & 0x7c00u) == 0x7c00u)
            return MD_ERR_INVALID;
    md_status s = MD_OK;
    pthread_rwlock_wrlock(&ix->lock);
    vid_entry *e;
    if ((s = get_or_add_video(ix, video_id, &e)) != MD_OK)
        goto out;
    int pos = find_seq(ix, e, seq);
    size_t row;
    if (pos >= 0) {
        row = (size_t)e->rows[pos];
    } else {
        if (ix->n == ix->cap && (s = grow_rows(ix)) != MD_OK)
            goto out;
        if (e->n == e->cap) {
            int nc = e->cap ? e->cap * 2 : 16;
            int *nr = realloc(e->rows, (size_t)nc * sizeof *nr);
            if (!nr) {
                s = MD_ERR_NOMEM;
                goto out;
            }
            e->rows = nr;
            e->cap = nc;
        }
        pos = -pos - 1;
        memmove(e->rows + pos + 1, e->rows + pos, (size_t)(e->n - pos) * sizeof *e->rows);
        row = ix->n++;
        e->rows[pos] = (int)row;
        e->n++;
    }
    const kernels *k = kern();
    uint16_t *dst = ix->h16 + row * (size_t)ix->dim;
    if (f)
        k->to_f16(f, dst, ix->dim);
    else
        memcpy(dst, h, (size_t)ix->dim * sizeof *h);
    k->from_f16(dst, ix->scratch, ix->dim);
    quantise_row(ix, row, ix->scratch);
    ix->vid[row] = video_id;
    ix->seq[row] = seq;
    ix->t0[row] = start_ms;
    ix->t1[row] = end_ms;
out:
    pthread_rwlock_unlock(&ix->lock);
    return s;
}

md_status md_index_add(md_index *ix, long long video_id, int seq, long long start_ms, long long end_ms,
                       const float *emb)
{
    return add_row(ix, video_id, seq, start_ms, end_ms, emb, NULL);
}

md_status md_index_add_f16(md_index *ix, long long video_id, int seq, long long start_ms, long long end_ms,
                           const uint16_t *emb)
{
    return add_row(ix, video_id, seq, start_ms, end_ms, NULL, emb);
}

static int cmp_int_desc(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x < y) - (x > y);
}

void md_index_remove_video(md_index *ix, long long video_id)
{
    pthread_rwlock_wrlock(&ix->lock);
    vid_entry *e = find_video(ix, video_id);
    if (!e)
        goto out;
    /* Highest rows first: the row moved into each hole then never belongs to
     * this video (its rows above the hole are already gone). */
    qsort(e->rows, (size_t)e->n, sizeof *e->rows, cmp_int_desc);
    const size_t d = (size_t)ix->dim;
    for (int i = 0; i < e->n; i++) {
        size_t r = (size_t)e->rows[i], last = ix->n - 1;
        if (r != last) {
            memcpy(ix->h16 + r * d, ix->h16 + last * d, d * sizeof *ix->h16);
            memcpy(ix->q8 + r * d, ix->q8 + last * d, d);
            ix->scale[r] = ix->scale[last];
            ix->vid[r] = ix->vid[last];
            ix->seq[r] = ix->seq[last];
            ix->t0[r] = ix->t0[last];
            ix->t1[r] = ix->t1[last];
            vid_entry *o = find_video(ix, ix->vid[r]);
            int p = o ? find_seq(ix, o, ix->seq[r]) : -1;
            if (p >= 0)
                o->rows[p] = (int)r;
        }
        ix->n--;
    }
    free(e->rows);
    *e = (vid_entry){.video_id = -1};
out:
    pthread_rwlock_unlock(&ix->lock);
}

/* ---- retrieval --------------------------------------------------------- */

typedef struct cand {
    float s;      /* first-pass score during the scan; exact once re-scored */
    float approx; /* first-pass score */
    int row;
} cand;

static int cmp_cand_desc(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->s != y->s)
        return x->s < y->s ? 1 : -1;
    return x->row - y->row;
}

/* Min-heap of the M best candidates. */
static void heap_push(cand *h, int *n, int m, cand c)
{
    if (*n < m) {
        int i = (*n)++;
        h[i] = c;
        while (i > 0 && h[(i - 1) / 2].s > h[i].s) {
            cand t = h[i];
            h[i] = h[(i - 1) / 2];
            h[(i - 1) / 2] = t;
            i = (i - 1) / 2;
        }
        return;
    }
    if (c.s <= h[0].s)
        return;
    h[0] = c;
    for (int i = 0;;) {
        int l = 2 * i + 1, r = l + 1, s = i;
        if (l < *n && h[l].s < h[s].s)
            s = l;
        if (r < *n && h[r].s < h[s].s)
            s = r;
        if (s == i)
            break;
        cand t = h[i];
        h[i] = h[s];
        h[s] = t;
        i = s;
    }
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

/* Exact scores: the query against a row's halves. */
typedef struct scorer {
    const md_index *ix;
    const kernels *k; /* taken once per query: md_search_set_kernel may change the global */
    const float *q;
} scorer;

static float row_score(const scorer *sc, int row)
{
    float s;
    sc->k->scan_f16(sc->q, sc->ix->h16 + (size_t)row * sc->ix->dim, 1, sc->ix->dim, &s);
    return s;
}

/* The first pass's work, shared by its threads: rows [0, total), or
 * list[0 .. total) when there is a list, handed out a chunk at a time. */
typedef struct scan_work {
    const scorer *sc;
    md_scan scan;
    const int *list;
    size_t total, chunk;
    size_t next; /* the first row not handed out yet (atomic) */
} scan_work;

/* One thread's results: its best m candidates in heap, its score sums. */
typedef struct scan_job {
    scan_work *w;
    cand *heap;
    int hn, m;
    double sum, sum2;
} scan_job;

#define SCAN_BLOCK 256

/* Scans rows (or list entries) [a, b) into J's heap and sums. */
static void scan_range(scan_job *j, size_t a, size_t b)
{
    const scan_work *w = j->w;
    const md_index *ix = w->sc->ix;
    const kernels *k = w->sc->k;
    const float *q = w->sc->q;
    const int dim = ix->dim;
    const size_t d = (size_t)dim;
    float buf[SCAN_BLOCK];
    for (size_t i = a; i < b; i += SCAN_BLOCK) {
        size_t cnt = b - i < SCAN_BLOCK ? b - i : SCAN_BLOCK;
        if (!w->list && w->scan == MD_SCAN_EXACT) {
            k->scan_f16(q, ix->h16 + i * d, cnt, dim, buf);
        } else if (!w->list) {
            k->scan_i8(q, ix->q8 + i * d, ix->scale + i, cnt, dim, buf);
        } else {
            for (size_t t = 0; t < cnt; t++) {
                size_t r = (size_t)w->list[i + t];
                if (w->scan == MD_SCAN_EXACT)
                    k->scan_f16(q, ix->h16 + r * d, 1, dim, buf + t);
                else
                    k->scan_i8(q, ix->q8 + r * d, ix->scale + r, 1, dim, buf + t);
            }
        }
        double sum = 0, sum2 = 0;
        for (size_t t = 0; t < cnt; t++) {
            float s = buf[t];
            sum += s;
            sum2 += (double)s * s;
            if (j->hn < j->m || s > j->heap[0].s)
                heap_push(j->heap, &j->hn, j->m, (cand){s, s, w->list ? w->list[i + t] : (int)(i + t)});
        }
        j->sum += sum;
        j->sum2 += sum2;
    }
}

/* Scans chunks until none are left. Chunks rather than one fixed range per
 * thread: on a busy machine a thread that loses its core leaves its work to
 * the others instead of holding up the whole query. */
static void *scan_run(void *arg)
{
    scan_job *j = arg;
    scan_work *w = j->w;
    for (;;) {
        size_t a = __atomic_fetch_add(&w->next, w->chunk, __ATOMIC_RELAXED);
        if (a >= w->total)
            break;
        scan_range(j, a, w->total - a < w->chunk ? w->total : a + w->chunk);
    }
    return NULL;
}

/* Candidates for a query: the first pass over all rows (or P->videos' rows)
 * on up to ix->threads threads, the best M of it re-scored exactly, sorted by
 * exact score into *OUT (the caller's), *N_OUT of them; *SUM, *SUM2 of the
 * first-pass scores of the *CNT rows scanned. Holds no lock itself. */
static md_status first_pass(md_index *ix, const scorer *sc, const md_search_params *p, int m, cand **out, int *n_out,
                            double *sum, double *sum2, long long *cnt)
{
    md_status s = MD_OK;
    long long *ids = NULL;
    int *list = NULL;
    scan_job *jobs = NULL;
    cand *all = NULL;
    pthread_t *tids = NULL;
    char *started = NULL;
    int nt = 0;
    *out = NULL;
    *n_out = 0;
    *sum = *sum2 = 0;
    *cnt = 0;
    size_t total = ix->n;
    if (p->videos && p->n_videos > 0) {
        /* Only the filtered videos' rows are scanned: a filtered query costs
         * what those videos hold, not what the library holds. */
        if (!(ids = malloc((size_t)p->n_videos * sizeof *ids)))
            return MD_ERR_NOMEM;
        memcpy(ids, p->videos, (size_t)p->n_videos * sizeof *ids);
        qsort(ids, (size_t)p->n_videos, sizeof *ids, cmp_ll);
        total = 0;
        for (int i = 0; i < p->n_videos; i++) {
            const vid_entry *e = (i && ids[i] == ids[i - 1]) ? NULL : find_video(ix, ids[i]);
            total += e ? (size_t)e->n : 0;
        }
        if (total && !(list = malloc(total * sizeof *list))) {
            s = MD_ERR_NOMEM;
            goto out;
        }
        total = 0;
        for (int i = 0; i < p->n_videos; i++) {
            const vid_entry *e = (i && ids[i] == ids[i - 1]) ? NULL : find_video(ix, ids[i]);
            for (int r = 0; e && r < e->n; r++)
                list[total++] = e->rows[r];
        }
    }
    if (total == 0 || m <= 0)
        goto out;
    size_t max_nt = total * (size_t)ix->dim / MIN_VALUES_PER_THREAD;
    nt = __atomic_load_n(&ix->threads, __ATOMIC_RELAXED);
    nt = (size_t)nt > max_nt ? (int)max_nt : nt;
    nt = nt < 1 ? 1 : nt;
    jobs = calloc((size_t)nt, sizeof *jobs);
    all = malloc((size_t)nt * (size_t)m * sizeof *all);
    tids = calloc((size_t)nt, sizeof *tids);
    started = calloc((size_t)nt, 1);
    if (!jobs || !all || !tids || !started) {
        s = MD_ERR_NOMEM;
        goto out;
    }
    scan_work w = {.sc = sc, .scan = p->scan, .list = list, .total = total};
    w.chunk = CHUNK_VALUES / (size_t)ix->dim;
    w.chunk = w.chunk < SCAN_BLOCK ? SCAN_BLOCK : w.chunk;
    for (int t = 0; t < nt; t++)
        jobs[t] = (scan_job){.w = &w, .heap = all + (size_t)t * m, .m = m};
    /* Threads per query rather than a pool: starting one costs tens of
     * microseconds against milliseconds of scanning, and nothing outlives the
     * call. A thread that cannot start has its share run here. */
    for (int t = 1; t < nt; t++)
        started[t] = pthread_create(&tids[t], NULL, scan_run, &jobs[t]) == 0;
    scan_run(&jobs[0]);
    for (int t = 1; t < nt; t++) {
        if (started[t])
            pthread_join(tids[t], NULL);
        else
            scan_run(&jobs[t]);
    }
    int n = 0;
    for (int t = 0; t < nt; t++) {
        *sum += jobs[t].sum;
        *sum2 += jobs[t].sum2;
        memmove(all + n, jobs[t].heap, (size_t)jobs[t].hn * sizeof *all);
        n += jobs[t].hn;
    }
    *cnt = (long long)total;
    /* The best M over all threads (by first-pass score), then exact scores. */
    qsort(all, (size_t)n, sizeof *all, cmp_cand_desc);
    n = n < m ? n : m;
    if (p->scan != MD_SCAN_EXACT) {
        for (int i = 0; i < n; i++)
            all[i].s = row_score(sc, all[i].row);
        qsort(all, (size_t)n, sizeof *all, cmp_cand_desc);
    }
    *out = all;
    *n_out = n;
    all = NULL;
out:
    free(ids);
    free(list);
    free(jobs);
    free(all);
    free(tids);
    free(started);
    return s;
}

/* Candidates to re-score and grow: max(256, 4 (offset + k)), at most N. */
static int candidates(const md_search_params *p, size_t n)
{
    long long m = 4LL * ((long long)p->offset + p->k);
    m = m < MIN_CANDIDATES ? MIN_CANDIDATES : m;
    return (int)(m > (long long)n ? (long long)n : m);
}

#define COVERED(c, r) ((c)[(size_t)(r) >> 3] & (1u << ((r) & 7)))
#define COVER(c, r) ((c)[(size_t)(r) >> 3] |= (uint8_t)(1u << ((r) & 7)))

/* Grows a moment around row PEAK (exact score PS) of entry E (see search.h),
 * scoring the neighbours it visits exactly. Marks rows covered. */
static md_moment grow_moment(const md_index *ix, const scorer *sc, const vid_entry *e, int peak, float ps,
                             uint8_t *covered, float mean, float std)
{
    int p = find_seq(ix, e, ix->seq[peak]);
    float thr = mean + (ps - mean) / 2, rise = (ps - mean) / 4, prev_s = ps;
    int lo = p, hi = p;
    for (int j = p - 1; j >= 0; j--) {
        int r = e->rows[j], prev = e->rows[j + 1];
        if (COVERED(covered, r) || ix->seq[r] != ix->seq[prev] - 1)
            break;
        float s = row_score(sc, r);
        if (s < thr || s > prev_s + rise)
            break;
        lo = j;
        prev_s = s;
    }
    prev_s = ps;
    for (int j = p + 1; j < e->n; j++) {
        int r = e->rows[j], prev = e->rows[j - 1];
        if (COVERED(covered, r) || ix->seq[r] != ix->seq[prev] + 1)
            break;
        float s = row_score(sc, r);
        if (s < thr || s > prev_s + rise)
            break;
        hi = j;
        prev_s = s;
    }
    for (int j = lo; j <= hi; j++)
        COVER(covered, e->rows[j]);
    md_moment m = {.video_id = ix->vid[peak],
                   .start_ms = ix->t0[e->rows[lo]],
                   .end_ms = ix->t1[e->rows[hi]],
                   .first_seq = ix->seq[e->rows[lo]],
                   .last_seq = ix->seq[e->rows[hi]],
                   .peak_seq = ix->seq[peak],
                   .score = ps,
                   .z = std > 0 ? (ps - mean) / std : 0};
    return m;
}

md_status md_index_search(md_index *ix, const float *query, const md_search_params *p, md_search_result *out)
{
    md_status s = MD_OK;
    uint8_t *covered = NULL;
    cand *cands = NULL;
    int nc = 0;
    memset(out, 0, sizeof *out);
    if (p->k < 0 || p->offset < 0)
        return MD_ERR_INVALID;
    const scorer sc = {ix, kern(), query};
    pthread_rwlock_rdlock(&ix->lock);
    size_t n = ix->n;
    if (n == 0)
        goto out;
    double sum, sum2;
    long long cnt;
    if ((s = first_pass(ix, &sc, p, candidates(p, n), &cands, &nc, &sum, &sum2, &cnt)) != MD_OK)
        goto out;
    out->scored = cnt;
    if (!cnt)
        goto out;
    double mean = sum / (double)cnt, var = sum2 / (double)cnt - mean * mean;
    out->mean = (float)mean;
    out->std = (float)(var > 0 ? sqrt(var) : 0);
    out->z_needed = z_needed(cnt);

    covered = calloc((n + 7) / 8, 1);
    md_moment *all = malloc((size_t)(nc ? nc : 1) * sizeof *all);
    if (!covered || !all) {
        free(all);
        s = MD_ERR_NOMEM;
        goto out;
    }
    int na = 0;
    for (int i = 0; i < nc; i++) {
        int row = cands[i].row;
        if (COVERED(covered, row))
            continue;
        const vid_entry *e = find_video(ix, ix->vid[row]);
        md_moment mo = grow_moment(ix, &sc, e, row, cands[i].s, covered, out->mean, out->std);
        if (mo.score >= p->min_score)
            all[na++] = mo;
    }
    out->total = na;
    out->confident = na > 0 && all[0].z >= out->z_needed;
    int from = p->offset < na ? p->offset : na, to = p->k < na - from ? from + p->k : na;
    out->n = to - from;
    memmove(all, all + from, (size_t)out->n * sizeof *all);
    out->moments = all;
    int nsegs = 0;
    for (int i = 0; i < out->n; i++)
        nsegs += all[i].last_seq - all[i].first_seq + 1;
    if (!(out->segs = malloc((size_t)(nsegs ? nsegs : 1) * sizeof *out->segs))) {
        s = MD_ERR_NOMEM;
        goto out;
    }
    nsegs = 0;
    for (int i = 0; i < out->n; i++) {
        const vid_entry *e = find_video(ix, all[i].video_id);
        int p0 = find_seq(ix, e, all[i].first_seq);
        all[i].seg0 = nsegs;
        all[i].n_segs = all[i].last_seq - all[i].first_seq + 1;
        for (int j = 0; j < all[i].n_segs; j++) {
            int r = e->rows[p0 + j];
            out->segs[nsegs++] = (md_segment_hit){ix->seq[r], ix->t0[r], ix->t1[r], row_score(&sc, r)};
        }
    }
out:
    pthread_rwlock_unlock(&ix->lock);
    if (s != MD_OK)
        md_search_result_free(out);
    free(covered);
    free(cands);
    return s;
}

void md_search_result_free(md_search_result *r)
{
    if (!r)
        return;
    free(r->moments);
    free(r->segs);
    r->moments = NULL;
    r->segs = NULL;
    r->n = 0;
}

md_status md_index_top_segments(md_index *ix, const float *query, const md_search_params *p, md_segment_score *out,
                                int *n_out)
{
    md_status s = MD_OK;
    cand *cands = NULL;
    int nc = 0;
    *n_out = 0;
    if (p->k < 0 || p->offset < 0)
        return MD_ERR_INVALID;
    const scorer sc = {ix, kern(), query};
    pthread_rwlock_rdlock(&ix->lock);
    double sum, sum2;
    long long cnt;
    if (ix->n && (s = first_pass(ix, &sc, p, candidates(p, ix->n), &cands, &nc, &sum, &sum2, &cnt)) == MD_OK) {
        for (int i = p->offset; i < nc && *n_out < p->k && cands[i].s >= p->min_score; i++) {
            int r = cands[i].row;
            out[(*n_out)++] = (md_segment_score){ix->vid[r], ix->seq[r], ix->t0[r], ix->t1[r], cands[i].s,
                                                 cands[i].approx};
        }
    }
    pthread_rwlock_unlock(&ix->lock);
    free(cands);
    return s;
}

/* ---- grounding --------------------------------------------------------- */

static int cmp_ll_asc(const void *a, const void *b) { return cmp_ll(a, b); }

typedef struct run {
    int lo, hi;
    float rank; /* best smoothed score inside */
} run;

static int cmp_run_desc(const void *a, const void *b)
{
    const run *x = a, *y = b;
    return (x->rank < y->rank) - (x->rank > y->rank);
}

md_status md_index_ground(md_index *ix, long long video_id, const float *query, const md_ground_params *p,
                          md_ground_result *out)
{
    md_status s = MD_OK;
    float *raw = NULL, *sm = NULL;
    long long *t0 = NULL, *t1 = NULL, *lens = NULL;
    run *runs = NULL;
    memset(out, 0, sizeof *out);
    pthread_rwlock_rdlock(&ix->lock);
    const vid_entry *e = find_video(ix, video_id);
    if (!e || e->n == 0) {
        s = MD_ERR_NOT_FOUND;
        goto out;
    }
    int n = e->n;
    raw = malloc((size_t)n * sizeof *raw);
    sm = malloc((size_t)n * sizeof *sm);
    t0 = malloc((size_t)n * sizeof *t0);
    t1 = malloc((size_t)n * sizeof *t1);
    lens = malloc((size_t)n * sizeof *lens);
    runs = malloc((size_t)n * 2 * sizeof *runs);
    if (!raw || !sm || !t0 || !t1 || !lens || !runs) {
        s = MD_ERR_NOMEM;
        goto out;
    }
    const scorer sc = {ix, kern(), query};
    for (int i = 0; i < n; i++) {
        int r = e->rows[i];
        raw[i] = row_score(&sc, r);
        t0[i] = ix->t0[r];
        t1[i] = ix->t1[r];
        lens[i] = t1[i] - t0[i];
    }
    qsort(lens, (size_t)n, sizeof *lens, cmp_ll_asc);
    out->precision_ms = lens[n / 2];
    out->n_segments = n;

    /* Gaussian smoothing, renormalised at the edges so the ends are not pulled down. */
    int rad = p->sigma > 0 ? (int)ceilf(3 * p->sigma) : 0;
    for (int i = 0; i < n; i++) {
        double acc = 0, wsum = 0;
        for (int j = i - rad; j <= i + rad; j++) {
            if (j < 0 || j >= n)
                continue;
            double w = rad ? exp(-0.5 * (double)(j - i) * (j - i) / ((double)p->sigma * p->sigma)) : 1;
            acc += w * raw[j];
            wsum += w;
        }
        sm[i] = (float)(acc / wsum);
    }

    /* The null distribution: a spread sample of the whole index (this video included). */
    size_t total = ix->n, step = total > 8192 ? total / 8192 : 1;
    double nsum = 0, nsum2 = 0;
    long long ncnt = 0;
    for (size_t r = 0; r < total; r += step) {
        double v = row_score(&sc, (int)r);
        nsum += v;
        nsum2 += v * v;
        ncnt++;
    }
    double nmean = nsum / (double)ncnt, nvar = nsum2 / (double)ncnt - nmean * nmean;
    out->null_mean = (float)nmean;
    out->null_std = (float)(nvar > 0 ? sqrt(nvar) : 0);
    out->z_needed = z_needed(n);

    /* Runs above two levels between the video's mean and its peak; the nested
     * candidates are then deduplicated by non-maximum suppression. */
    double vmean = 0;
    float peak = sm[0];
    for (int i = 0; i < n; i++) {
        vmean += sm[i];
        if (sm[i] > peak)
            peak = sm[i];
    }
    vmean /= n;
    out->threshold = (float)(vmean + 0.5 * (peak - vmean));
    int nr = 0;
    const double levels[2] = {0.5, 0.25};
    for (int l = 0; l < 2; l++) {
        float thr = (float)(vmean + levels[l] * (peak - vmean));
        for (int i = 0; i < n;) {
            if (sm[i] < thr || (peak - vmean) <= 0) {
                i++;
                continue;
            }
            int j = i;
            float best = sm[i];
            while (j + 1 < n && sm[j + 1] >= thr) {
                j++;
                if (sm[j] > best)
                    best = sm[j];
            }
            runs[nr++] = (run){i, j, best};
            i = j + 1;
        }
    }
    qsort(runs, (size_t)nr, sizeof *runs, cmp_run_desc);
    out->moments = malloc((size_t)(nr ? nr : 1) * sizeof *out->moments);
    if (!out->moments) {
        s = MD_ERR_NOMEM;
        goto out;
    }
    for (int i = 0; i < nr && out->n < p->top_n; i++) {
        run *rn = &runs[i];
        int keep = 1;
        for (int k = 0; k < out->n && keep; k++) {
            md_moment *o = &out->moments[k];
            long long a0 = t0[rn->lo], a1 = t1[rn->hi];
            long long inter = (a1 < o->end_ms ? a1 : o->end_ms) - (a0 > o->start_ms ? a0 : o->start_ms);
            long long uni = (a1 > o->end_ms ? a1 : o->end_ms) - (a0 < o->start_ms ? a0 : o->start_ms);
            if (inter > 0 && uni > 0 && (float)inter / (float)uni > p->nms_iou)
                keep = 0;
            if (inter > 0 && rn->lo >= o->first_seq && rn->hi <= o->last_seq)
                keep = 0; /* nested inside a better one */
        }
        if (!keep)
            continue;
        int pk = rn->lo;
        for (int k = rn->lo; k <= rn->hi; k++)
            if (raw[k] > raw[pk])
                pk = k;
        out->moments[out->n++] = (md_moment){.video_id = video_id,
                                             .start_ms = t0[rn->lo],
                                             .end_ms = t1[rn->hi],
                                             .first_seq = ix->seq[e->rows[rn->lo]],
                                             .last_seq = ix->seq[e->rows[rn->hi]],
                                             .peak_seq = ix->seq[e->rows[pk]],
                                             .score = raw[pk],
                                             .z = out->null_std > 0 ? (raw[pk] - out->null_mean) / out->null_std : 0};
    }
    out->confident = out->n > 0 && out->moments[0].z >= out->z_needed;
    if (p->with_curve) {
        out->raw = raw;
        out->smooth = sm;
        out->start_ms = t0;
        out->end_ms = t1;
        raw = sm = NULL;
        t0 = t1 = NULL;
    }
out:
    pthread_rwlock_unlock(&ix->lock);
    if (s != MD_OK)
        md_ground_result_free(out);
    free(raw);
    free(sm);
    free(t0);
    free(t1);
    free(lens);
    free(runs);
    return s;
}

void md_ground_result_free(md_ground_result *r)
{
    if (!r)
        return;
    free(r->moments);
    free(r->raw);
    free(r->smooth);
    free(r->start_ms);
    free(r->end_ms);
    memset(r, 0, sizeof *r);
}
