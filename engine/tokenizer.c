/* tokenizer.c - CLIP's byte-level BPE tokenizer: encoding (see tokenizer.h for the exact pipeline;
 * loading is in tokenizer_load.c, the data layout in tokenizer_internal.h).
 *
 * Text is processed one whitespace-separated word at a time. That equals transformers' whole-
 * string processing because whitespace never takes part in NFC composition or reordering, and
 * neither NFC nor lower-casing turns whitespace into something else or vice versa (checked over
 * every code point against the tokenizers library); the Split regex drops whitespace anyway. It
 * lets encoding stop as soon as the context is full, however long the text.
 */
#define _POSIX_C_SOURCE 200809L
#include "tokenizer_internal.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "unicode_tables.h"

#define CACHE_KEY_MAX 64 /* longer pieces are rare and not worth a cache slot */

/* ---- Unicode ------------------------------------------------------------------------------- */

enum { SBASE = 0xAC00, LBASE = 0x1100, VBASE = 0x1161, TBASE = 0x11A7, LCOUNT = 19, VCOUNT = 21, TCOUNT = 28 };
enum { NCOUNT = VCOUNT * TCOUNT, SCOUNT = LCOUNT * NCOUNT };

static int char_class(uint32_t c)
{
    if (c < 0x80) {
        if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
            return MD_UC_LETTER;
        if (c >= '0' && c <= '9')
            return MD_UC_NUMBER;
        if (c == ' ' || (c >= 0x09 && c <= 0x0D))
            return MD_UC_SPACE;
        return MD_UC_OTHER;
    }
    size_t lo = 0, hi = sizeof md_uc_class / sizeof md_uc_class[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < md_uc_class[mid].lo)
            hi = mid;
        else if (c > md_uc_class[mid].hi)
            lo = mid + 1;
        else
            return md_uc_class[mid].cls;
    }
    return MD_UC_OTHER;
}

static uint32_t lower1(uint32_t c)
{
    if (c < 0x80)
        return c >= 'A' && c <= 'Z' ? c + 32 : c;
    size_t lo = 0, hi = sizeof md_uc_lower / sizeof md_uc_lower[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < md_uc_lower[mid].cp)
            hi = mid;
        else if (c > md_uc_lower[mid].cp)
            lo = mid + 1;
        else
            return md_uc_lower[mid].to;
    }
    return c;
}

static int ccc_of(uint32_t c)
{
    if (c < 0x300)
        return 0;
    size_t lo = 0, hi = sizeof md_uc_ccc / sizeof md_uc_ccc[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < md_uc_ccc[mid].lo)
            hi = mid;
        else if (c > md_uc_ccc[mid].hi)
            lo = mid + 1;
        else
            return md_uc_ccc[mid].ccc;
    }
    return 0;
}

static const md_uc_decomp *decomp_of(uint32_t c)
{
    if (c < 0xC0)
        return NULL;
    size_t lo = 0, hi = sizeof md_uc_decomp_tab / sizeof md_uc_decomp_tab[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < md_uc_decomp_tab[mid].cp)
            hi = mid;
        else if (c > md_uc_decomp_tab[mid].cp)
            lo = mid + 1;
        else
            return &md_uc_decomp_tab[mid];
    }
    return NULL;
}

static uint32_t compose(uint32_t a, uint32_t b)
{
    if (a >= LBASE && a < LBASE + LCOUNT && b >= VBASE && b < VBASE + VCOUNT)
        return SBASE + ((a - LBASE) * VCOUNT + (b - VBASE)) * TCOUNT;
    if (a >= SBASE && a < SBASE + SCOUNT && (a - SBASE) % TCOUNT == 0 && b > TBASE && b < TBASE + TCOUNT)
        return a + (b - TBASE);
    size_t lo = 0, hi = sizeof md_uc_comp_tab / sizeof md_uc_comp_tab[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const md_uc_comp *e = &md_uc_comp_tab[mid];
        if (a < e->a || (a == e->a && b < e->b))
            hi = mid;
        else if (a > e->a || b > e->b)
            lo = mid + 1;
        else
            return e->cp;
    }
    return 0;
}

/* A growable code point buffer. */
typedef struct cpbuf {
    uint32_t *v;
    size_t n, cap;
} cpbuf;

static int cp_push(cpbuf *b, uint32_t c)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 64;
        uint32_t *v = realloc(b->v, cap * sizeof *v);
        if (!v)
            return -1;
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = c;
    return 0;
}

static int decompose_into(uint32_t c, cpbuf *out, int depth)
{
    if (c >= SBASE && c < SBASE + SCOUNT) {
        uint32_t s = c - SBASE;
        if (cp_push(out, LBASE + s / NCOUNT) || cp_push(out, VBASE + (s % NCOUNT) / TCOUNT))
            return -1;
        return s % TCOUNT ? cp_push(out, TBASE + s % TCOUNT) : 0;
    }
    const md_uc_decomp *d = depth < 8 ? decomp_of(c) : NULL;
    if (!d)
        return cp_push(out, c);
    if (decompose_into(d->a, out, depth + 1))
        return -1;
    return d->b ? decompose_into(d->b, out, depth + 1) : 0;
}

/* NFC of IN[0..N) into OUT (which it resets). The standard algorithm: full canonical
 * decomposition, canonical ordering of non-starter runs, then canonical composition. */
static int nfc(const uint32_t *in, size_t n, cpbuf *out)
{
    out->n = 0;
    int simple = 1;
    for (size_t i = 0; i < n; i++)
        if (in[i] >= 0x300) /* below U+0300 every string is already NFC */
            simple = 0;
    if (simple) {
        for (size_t i = 0; i < n; i++)
            if (cp_push(out, in[i]))
                return -1;
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        if (decompose_into(in[i], out, 0))
            return -1;
    uint32_t *v = out->v;
    size_t m = out->n;
    /* Insertion sort by class inside each run of non-starters (stable, runs are short). */
    for (size_t i = 1; i < m; i++) {
        int ci = ccc_of(v[i]);
        if (ci == 0)
            continue;
        uint32_t c = v[i];
        size_t j = i;
        while (j > 0) {
            int cj = ccc_of(v[j - 1]);
            if (cj <= ci)
                break;
            v[j] = v[j - 1];
            j--;
        }
        v[j] = c;
    }
    if (m == 0)
        return 0;
    size_t starter = 0, w = 1;
    int last = ccc_of(v[0]) ? 256 : 0;
    for (size_t r = 1; r < m; r++) {
        uint32_t c = v[r];
        int cc = ccc_of(c);
        uint32_t x = compose(v[starter], c);
        if (x && (last < cc || last == 0)) {
            v[starter] = x;
            continue;
        }
        if (cc == 0)
            starter = w;
        last = cc;
        v[w++] = c;
    }
    out->n = w;
    return 0;
}

/* Next code point of the NUL-terminated UTF-8 at *P, advancing *P. Invalid sequences give
 * U+FFFD once per maximal subpart of a valid sequence (Unicode's recommended practice, as
 * Python's errors="replace" and Rust's from_utf8_lossy). */
static uint32_t utf8_next(const unsigned char **p)
{
    const unsigned char *s = *p;
    unsigned c = s[0];
    if (c < 0x80) {
        *p = s + 1;
        return c;
    }
    int need;
    uint32_t cp;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        cp = c & 0x0F;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        cp = c & 0x07;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        *p = s + 1;
        return 0xFFFD;
    }
    size_t i = 1;
    for (; i <= (size_t)need; i++) {
        unsigned b = s[i]; /* the NUL terminator fails the range test, so this never reads past it */
        if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xBF)) {
            *p = s + i;
            return 0xFFFD;
        }
        cp = cp << 6 | (b & 0x3F);
    }
    *p = s + i;
    return cp;
}

static size_t utf8_put(uint32_t c, unsigned char *o)
{
    if (c < 0x80) {
        o[0] = (unsigned char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (unsigned char)(0xC0 | c >> 6);
        o[1] = (unsigned char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (unsigned char)(0xE0 | c >> 12);
        o[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | c >> 18);
    o[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (c & 0x3F));
    return 4;
}

/* ---- BPE ------------------------------------------------------------------------------------ */

static const merge_slot *merge_lookup(const md_tokenizer *t, int32_t a, int32_t b)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint32_t i = hash_u64(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        const merge_slot *m = &t->merges[i];
        if (m->key == key)
            return m;
        if (m->key == EMPTY_KEY)
            return NULL;
    }
}

typedef struct sink {
    int *ids;     /* where the next text id goes */
    int n, cap;   /* text ids written / room for them */
} sink;

static void sink_put(sink *s, const int32_t *ids, size_t n)
{
    for (size_t i = 0; i < n && s->n < s->cap; i++)
        s->ids[s->n++] = ids[i];
}

typedef struct heap_item {
    uint32_t rank, pos;
    int32_t id;
} heap_item;

static int heap_less(const heap_item *a, const heap_item *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(heap_item *h, size_t *n, heap_item it)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&it, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = it;
}

static heap_item heap_pop(heap_item *h, size_t *n)
{
    heap_item top = h[0], last = h[--*n];
    size_t i = 0, m = *n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, s = i;
        const heap_item *cur = &last;
        if (l < m && heap_less(&h[l], cur)) {
            s = l;
            cur = &h[l];
        }
        if (r < m && heap_less(&h[r], cur))
            s = r;
        if (s == i)
            break;
        h[i] = h[s];
        i = s;
    }
    if (m)
        h[i] = last;
    return top;
}

static cache_entry *cache_find(md_tokenizer *t, const unsigned char *key, size_t n, uint32_t h, int32_t *ids,
                               size_t *nids)
{
    cache_entry *hit = NULL;
    pthread_mutex_lock(&t->cache_mu);
    for (uint32_t i = h & (CACHE_SLOTS - 1);; i = (i + 1) & (CACHE_SLOTS - 1)) {
        cache_entry *e = t->cache[i];
        if (!e)
            break;
        if (e->hash == h && e->klen == n && memcmp(e->key, key, n) == 0) {
            memcpy(ids, e->ids, e->nids * sizeof *ids); /* copied while the lock is held */
            *nids = e->nids;
            hit = e;
            break;
        }
    }
    pthread_mutex_unlock(&t->cache_mu);
    return hit;
}

static void cache_add(md_tokenizer *t, const unsigned char *key, size_t n, uint32_t h, const int32_t *ids,
                      size_t nids)
{
    cache_entry *e = malloc(sizeof *e + n + (sizeof(int32_t) - 1) + nids * sizeof(int32_t));
    if (!e)
        return; /* a cache miss next time, nothing worse */
    e->hash = h;
    e->klen = (uint16_t)n;
    e->nids = (uint16_t)nids;
    memcpy(e->key, key, n);
    uintptr_t a = ((uintptr_t)(e->key + n) + sizeof(int32_t) - 1) & ~(uintptr_t)(sizeof(int32_t) - 1);
    e->ids = (int32_t *)a;
    memcpy(e->ids, ids, nids * sizeof *ids);
    pthread_mutex_lock(&t->cache_mu);
    if (t->cache_n >= MD_TOKENIZER_CACHE_MAX) { /* full: stop adding, as tokenizers' cache does */
        pthread_mutex_unlock(&t->cache_mu);
        free(e);
        return;
    }
    uint32_t i = h & (CACHE_SLOTS - 1);
    for (;; i = (i + 1) & (CACHE_SLOTS - 1)) {
        cache_entry *o = t->cache[i];
        if (!o)
            break;
        if (o->hash == h && o->klen == n && memcmp(o->key, key, n) == 0) { /* another thread won */
            pthread_mutex_unlock(&t->cache_mu);
            free(e);
            return;
        }
    }
    t->cache[i] = e;
    t->cache_n++;
    pthread_mutex_unlock(&t->cache_mu);
}

/* BPE of one pre-tokenised piece (its UTF-8 bytes B[0..N), N >= 1): one symbol per byte (the
 * last with "</w>"), then, like tokenizers' Word::merge_all, repeatedly the adjacent pair with the
 * lowest merge rank (leftmost on ties) is merged, until no pair has a rank. */
static md_status bpe_piece(md_tokenizer *t, const unsigned char *b, size_t n, sink *out)
{
    enum { SMALL = 128 };
    int32_t s_id[SMALL], s_prev[SMALL], s_next[SMALL];
    heap_item s_heap[3 * SMALL];
    int32_t *id = s_id, *prev = s_prev, *next = s_next;
    heap_item *heap = s_heap;
    md_status st = MD_OK;
    uint32_t h = 0;
    if (n <= CACHE_KEY_MAX) {
        size_t nids;
        h = hash_bytes(b, n);
        if (cache_find(t, b, n, h, s_id, &nids)) {
            sink_put(out, s_id, nids);
            return MD_OK;
        }
    }
    if (n > SMALL) {
        id = malloc(n * sizeof *id);
        prev = malloc(n * sizeof *prev);
        next = malloc(n * sizeof *next);
        heap = malloc(3 * n * sizeof *heap); /* n - 1 initial pairs, at most 2 more per merge */
        if (!id || !prev || !next || !heap) {
            st = MD_ERR_NOMEM;
            goto out;
        }
    }
    for (size_t i = 0; i < n; i++) {
        id[i] = i + 1 < n ? t->byte_sym[b[i]] : t->byte_sym_eow[b[i]];
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    size_t hn = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        const merge_slot *m = merge_lookup(t, id[i], id[i + 1]);
        if (m)
            heap_push(heap, &hn, (heap_item){m->rank, (uint32_t)i, m->id});
    }
    while (hn) {
        heap_item top = heap_pop(heap, &hn);
        uint32_t p = top.pos;
        if (id[p] < 0 || next[p] < 0)
            continue; /* merged away, or now the last symbol */
        int32_t r = next[p];
        const merge_slot *m = merge_lookup(t, id[p], id[r]);
        if (!m || m->id != top.id)
            continue; /* a stale entry: the pair at p has changed */
        id[p] = top.id;
        id[r] = -1;
        next[p] = next[r];
        if (next[r] >= 0)
            prev[next[r]] = (int32_t)p;
        if (prev[p] >= 0 && (m = merge_lookup(t, id[prev[p]], id[p])))
            heap_push(heap, &hn, (heap_item){m->rank, (uint32_t)prev[p], m->id});
        if (next[p] >= 0 && (m = merge_lookup(t, id[p], id[next[p]])))
            heap_push(heap, &hn, (heap_item){m->rank, p, m->id});
    }
    /* Compact the surviving symbols to the front of id[] (symbol 0 always survives). */
    size_t k = 0;
    for (int32_t i = 0; i >= 0; i = next[i])
        id[k++] = id[i];
    if (n <= CACHE_KEY_MAX)
        cache_add(t, b, n, h, id, k);
    sink_put(out, id, k);
out:
    if (id != s_id) {
        free(id);
        free(prev);
        free(next);
        free(heap);
    }
    return st;
}

/* ---- pre-tokenisation ---------------------------------------------------------------------- */

typedef struct work {
    cpbuf word, norm, low;
    unsigned char *bytes;
    size_t bytes_cap;
} work;

static md_status emit_piece(md_tokenizer *t, work *w, const uint32_t *c, size_t n, sink *out)
{
    if (n * 4 > w->bytes_cap) {
        size_t cap = n * 4 < 256 ? 256 : n * 4;
        unsigned char *nb = realloc(w->bytes, cap);
        if (!nb)
            return MD_ERR_NOMEM;
        w->bytes = nb;
        w->bytes_cap = cap;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += utf8_put(c[i], w->bytes + k);
    return bpe_piece(t, w->bytes, k, out);
}

static int cps_match(const uint32_t *c, size_t n, const char *s)
{
    size_t l = strlen(s);
    if (n < l)
        return 0;
    for (size_t i = 0; i < l; i++)
        if (c[i] != (unsigned char)s[i])
            return 0;
    return 1;
}

/* The CLIP Split regex
 *   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 * over C[0..N) (normalised, no whitespace, no special-token string left), scanned leftmost-first
 * with its alternatives in order. The ByteLevel step's GPT-2 regex would split a piece further
 * only if it held a special-token string, which it cannot here. */
static md_status split_pieces(md_tokenizer *t, work *w, const uint32_t *c, size_t n, sink *out)
{
    md_status st = MD_OK;
    size_t i = 0;
    while (i < n && out->n < out->cap && st == MD_OK) {
        size_t rest = n - i, len = 0;
        if (c[i] == '\'' && rest >= 2) {
            uint32_t a = c[i + 1], b = rest >= 3 ? c[i + 2] : 0;
            if (a == 's' || a == 't' || a == 'm' || a == 'd')
                len = 2;
            else if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
                len = 3;
        }
        if (!len) {
            int cls = char_class(c[i]);
            len = 1;
            if (cls != MD_UC_NUMBER) /* [\p{L}]+ or [^\s\p{L}\p{N}]+ */
                while (i + len < n && char_class(c[i + len]) == cls)
                    len++;
        }
        st = emit_piece(t, w, c + i, len, out);
        i += len;
    }
    return st;
}

/* One whitespace-free word: NFC, lower case, then - because the published checkpoints mark the
 * special tokens "normalized" - "<|startoftext|>" / "<|endoftext|>" are found in the normalised
 * text (leftmost first) and become their ids; the text around them goes through the regex. */
static md_status encode_word(md_tokenizer *t, work *w, sink *out)
{
    md_status st = MD_OK;
    int bad = nfc(w->word.v, w->word.n, &w->norm);
    w->word.n = 0;
    if (bad)
        return MD_ERR_NOMEM;
    w->low.n = 0;
    for (size_t i = 0; i < w->norm.n; i++) {
        uint32_t c = w->norm.v[i];
        if (c == 0x130) { /* the one multi-character lower-case mapping */
            if (cp_push(&w->low, 'i') || cp_push(&w->low, 0x307))
                return MD_ERR_NOMEM;
        } else if (cp_push(&w->low, lower1(c))) {
            return MD_ERR_NOMEM;
        }
    }
    const uint32_t *c = w->low.v;
    size_t n = w->low.n, i = 0, j = 0;
    while (j < n && out->n < out->cap && st == MD_OK) {
        int32_t sid = -1;
        size_t len = 0;
        if (c[j] == '<') {
            if (cps_match(c + j, n - j, BOS_STR)) {
                sid = t->bos_id;
                len = strlen(BOS_STR);
            } else if (cps_match(c + j, n - j, EOS_STR)) {
                sid = t->eos_id;
                len = strlen(EOS_STR);
            }
        }
        if (sid < 0) {
            j++;
            continue;
        }
        if (j > i)
            st = split_pieces(t, w, c + i, j - i, out);
        if (st == MD_OK)
            sink_put(out, &sid, 1);
        i = j = j + len;
    }
    if (st == MD_OK && i < n)
        st = split_pieces(t, w, c + i, n - i, out);
    return st;
}

md_status md_tokenizer_encode(md_tokenizer *t, const char *utf8, int context_len, int *ids, int *n_ids, char *err,
                              size_t errlen)
{
    md_status st = MD_OK;
    work w = {0};
    if (err && errlen)
        err[0] = '\0';
    if (!t || !utf8 || !ids || !n_ids)
        return md_errf(err, errlen, MD_ERR_INVALID, "md_tokenizer_encode: NULL argument");
    if (context_len < 2)
        return md_errf(err, errlen, MD_ERR_INVALID, "md_tokenizer_encode: context length %d < 2", context_len);
    sink out = {ids + 1, 0, context_len - 2};
    const unsigned char *p = (const unsigned char *)utf8;
    while (*p && out.n < out.cap) {
        uint32_t c = utf8_next(&p);
        if (char_class(c) == MD_UC_SPACE) {
            if (w.word.n && (st = encode_word(t, &w, &out)) != MD_OK)
                goto out;
            continue;
        }
        if (cp_push(&w.word, c)) {
            st = MD_ERR_NOMEM;
            goto out;
        }
    }
    if (w.word.n && out.n < out.cap && (st = encode_word(t, &w, &out)) != MD_OK)
        goto out;
    ids[0] = t->bos_id;
    ids[1 + out.n] = t->eos_id;
    *n_ids = out.n + 2;
out:
    if (st != MD_OK)
        md_errf(err, errlen, st, "md_tokenizer_encode: %s", st == MD_ERR_NOMEM ? "out of memory" : "failed");
    free(w.word.v);
    free(w.norm.v);
    free(w.low.v);
    free(w.bytes);
    return st;
}
