/* tokenizer_load.c - loading the CLIP tokenizer from vocab.json (token -> id) and merges.txt
 * (one "a b" merge per line, in rank order), both checked entry by entry; the byte symbols of
 * GPT-2's bytes_to_unicode(); md_tokenizer_free and the accessors. Encoding is in tokenizer.c;
 * the data layout both share is in tokenizer_internal.h. */
#define _POSIX_C_SOURCE 200809L
#include "tokenizer_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cJSON.h"

#define MAX_FILE_BYTES (64u << 20)
#define MAX_ID ((1 << 24) - 1)

/* ---- loading ------------------------------------------------------------------------------- */

static md_status read_file(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
    md_status st = MD_OK;
    char *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return md_errf(err, errlen, errno == ENOENT ? MD_ERR_NOT_FOUND : MD_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = md_errf(err, errlen, MD_ERR_IO, "%s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = md_errf(err, errlen, MD_ERR_INVALID, "%s: not a regular file", path);
        goto out;
    }
    if (sb.st_size > (off_t)MAX_FILE_BYTES) {
        st = md_errf(err, errlen, MD_ERR_TOO_LARGE, "%s: %lld bytes, more than the %u allowed", path,
                  (long long)sb.st_size, MAX_FILE_BYTES);
        goto out;
    }
    size_t n = (size_t)sb.st_size, got = 0;
    buf = malloc(n + 1);
    if (!buf) {
        st = md_errf(err, errlen, MD_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            st = md_errf(err, errlen, MD_ERR_IO, "%s: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break; /* shrank while reading: use what is there */
        got += (size_t)r;
    }
    buf[got] = '\0';
    *out = buf;
    *len = got;
    buf = NULL;
out:
    free(buf);
    close(fd);
    return st;
}

static int str_lookup(const md_tokenizer *t, const char *s, size_t n)
{
    for (uint32_t i = hash_bytes(s, n) & t->str_mask;; i = (i + 1) & t->str_mask) {
        int32_t id = t->str_slots[i];
        if (id < 0)
            return -1;
        if (t->tok_len[id] == n && memcmp(t->arena + t->tok_off[id], s, n) == 0)
            return id;
    }
}

static uint32_t pow2_at_least(uint64_t n)
{
    uint32_t p = 16;
    while (p < n)
        p <<= 1;
    return p;
}

static md_status load_vocab(md_tokenizer *t, const char *path, char *err, size_t errlen)
{
    md_status st = MD_OK;
    char *text = NULL;
    size_t len = 0;
    cJSON *root = NULL;
    if ((st = read_file(path, &text, &len, err, errlen)) != MD_OK)
        return st;
    root = cJSON_ParseWithLength(text, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long off = at && at >= text && at <= text + len ? (long)(at - text) : -1;
        st = md_errf(err, errlen, MD_ERR_INVALID, "%s: malformed JSON (near byte %ld)", path, off);
        goto out;
    }
    if (!cJSON_IsObject(root)) {
        st = md_errf(err, errlen, MD_ERR_INVALID, "%s: not a JSON object of token -> id", path);
        goto out;
    }
    /* First pass: count, check ids, size the arena. */
    size_t n = 0, bytes = 0;
    int max_id = -1;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!e->string) {
            st = md_errf(err, errlen, MD_ERR_INVALID, "%s: entry without a key", path);
            goto out;
        }
        double v = e->valuedouble;
        if (!cJSON_IsNumber(e) || !(v >= 0 && v <= MAX_ID) || v != (double)(int)v) {
            st = md_errf(err, errlen, MD_ERR_INVALID, "%s: token \"%.64s\": id is not an integer in [0, %d]", path,
                      e->string, MAX_ID);
            goto out;
        }
        if ((int)v > max_id)
            max_id = (int)v;
        n++;
        bytes += strlen(e->string) + 1;
    }
    if (n == 0) {
        st = md_errf(err, errlen, MD_ERR_INVALID, "%s: empty vocabulary", path);
        goto out;
    }
    t->vocab_size = max_id + 1;
    t->arena = malloc(bytes);
    t->arena_len = bytes;
    t->tok_off = malloc((size_t)t->vocab_size * sizeof *t->tok_off);
    t->tok_len = malloc((size_t)t->vocab_size * sizeof *t->tok_len);
    t->str_mask = pow2_at_least(2 * (uint64_t)n) - 1;
    t->str_slots = malloc(((size_t)t->str_mask + 1) * sizeof *t->str_slots);
    if (!t->arena || !t->tok_off || !t->tok_len || !t->str_slots) {
        st = md_errf(err, errlen, MD_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    memset(t->tok_off, 0xff, (size_t)t->vocab_size * sizeof *t->tok_off);
    memset(t->str_slots, 0xff, ((size_t)t->str_mask + 1) * sizeof *t->str_slots);
    size_t pos = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        int id = (int)e->valuedouble;
        size_t sl = strlen(e->string);
        if (t->tok_off[id] != UINT32_MAX) {
            st = md_errf(err, errlen, MD_ERR_INVALID, "%s: id %d is used by \"%.64s\" and \"%.64s\"", path, id,
                      t->arena + t->tok_off[id], e->string);
            goto out;
        }
        if (str_lookup(t, e->string, sl) >= 0) {
            st = md_errf(err, errlen, MD_ERR_INVALID, "%s: token \"%.64s\" appears twice", path, e->string);
            goto out;
        }
        memcpy(t->arena + pos, e->string, sl + 1);
        t->tok_off[id] = (uint32_t)pos;
        t->tok_len[id] = (uint32_t)sl;
        pos += sl + 1;
        uint32_t i = hash_bytes(e->string, sl) & t->str_mask;
        while (t->str_slots[i] >= 0)
            i = (i + 1) & t->str_mask;
        t->str_slots[i] = id;
    }
    t->bos_id = str_lookup(t, BOS_STR, strlen(BOS_STR));
    t->eos_id = str_lookup(t, EOS_STR, strlen(EOS_STR));
    if (t->bos_id < 0 || t->eos_id < 0) {
        st = md_errf(err, errlen, MD_ERR_INVALID, "%s: special token %s is missing", path,
                  t->bos_id < 0 ? BOS_STR : EOS_STR);
        goto out;
    }
    t->unk_id = t->eos_id; /* transformers' CLIP: unk_token = "<|endoftext|>" */
out:
    cJSON_Delete(root);
    free(text);
    return st;
}

static md_status load_merges(md_tokenizer *t, const char *path, char *err, size_t errlen)
{
    md_status st = MD_OK;
    char *text = NULL, *cat = NULL;
    size_t len = 0, cat_cap = 0;
    if ((st = read_file(path, &text, &len, err, errlen)) != MD_OK)
        return st;
    size_t lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    t->merge_mask = pow2_at_least(2 * (uint64_t)lines) - 1;
    t->merges = malloc(((size_t)t->merge_mask + 1) * sizeof *t->merges);
    if (!t->merges) {
        st = md_errf(err, errlen, MD_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    for (size_t i = 0; i <= t->merge_mask; i++)
        t->merges[i].key = EMPTY_KEY;
    char *p = text, *end = text + len;
    int lineno = 0;
    uint32_t rank = 0;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        lineno++;
        if (le > p && le[-1] == '\r') /* as Rust's lines() */
            le--;
        size_t ll = (size_t)(le - p);
        if (memchr(p, '\0', ll)) {
            st = md_errf(err, errlen, MD_ERR_INVALID, "%s:%d: NUL byte", path, lineno);
            goto out;
        }
        if (ll >= 8 && memcmp(p, "#version", 8) == 0) {
            p = nl ? nl + 1 : end;
            continue;
        }
        char *sp = memchr(p, ' ', ll);
        if (!sp || sp == p || sp + 1 == le || memchr(sp + 1, ' ', (size_t)(le - sp - 1))) {
            st = md_errf(err, errlen, MD_ERR_INVALID, "%s:%d: not a merge \"a b\": \"%.*s\"", path, lineno,
                      (int)(ll > 64 ? 64 : ll), p);
            goto out;
        }
        size_t la = (size_t)(sp - p), lb = (size_t)(le - sp - 1);
        int a = str_lookup(t, p, la), b = str_lookup(t, sp + 1, lb);
        if (a < 0 || b < 0) {
            st = md_errf(err, errlen, MD_ERR_INVALID, "%s:%d: merge refers to \"%.*s\", which is not in vocab.json",
                      path, lineno, a < 0 ? (int)(la > 64 ? 64 : la) : (int)(lb > 64 ? 64 : lb),
                      a < 0 ? p : sp + 1);
            goto out;
        }
        if (la + lb > cat_cap) {
            free(cat);
            cat_cap = 2 * (la + lb);
            if (!(cat = malloc(cat_cap))) {
                st = md_errf(err, errlen, MD_ERR_NOMEM, "%s: out of memory", path);
                goto out;
            }
        }
        memcpy(cat, p, la);
        memcpy(cat + la, sp + 1, lb);
        int m = str_lookup(t, cat, la + lb);
        if (m < 0) {
            st = md_errf(err, errlen, MD_ERR_INVALID, "%s:%d: the merged token \"%.*s\" is not in vocab.json", path,
                      lineno, (int)(la + lb > 64 ? 64 : la + lb), cat);
            goto out;
        }
        uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
        uint32_t i = hash_u64(key) & t->merge_mask;
        while (t->merges[i].key != EMPTY_KEY && t->merges[i].key != key)
            i = (i + 1) & t->merge_mask;
        if (t->merges[i].key == EMPTY_KEY)
            t->n_merges++;
        /* A repeated pair takes the later rank, as transformers' dict / HashMap does. */
        t->merges[i] = (merge_slot){key, rank, m};
        rank++;
        p = nl ? nl + 1 : end;
    }
out:
    free(cat);
    free(text);
    return st;
}

static void init_byte_map(md_tokenizer *t)
{
    /* GPT-2 bytes_to_unicode(): printable Latin-1 bytes map to themselves, the other 68 bytes to
     * U+0100.. in byte order, so that no token contains whitespace or control characters. */
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        t->byte_char[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
    }
    for (int b = 0; b < 256; b++) {
        char s[8];
        uint32_t c = t->byte_char[b];
        size_t n2;
        if (c < 0x80) {
            s[0] = (char)c;
            n2 = 1;
        } else { /* all < 0x800 */
            s[0] = (char)(0xC0 | (c >> 6));
            s[1] = (char)(0x80 | (c & 0x3F));
            n2 = 2;
        }
        int id = str_lookup(t, s, n2);
        t->byte_sym[b] = id >= 0 ? id : t->unk_id;
        memcpy(s + n2, "</w>", 4);
        id = str_lookup(t, s, n2 + 4);
        t->byte_sym_eow[b] = id >= 0 ? id : t->unk_id;
    }
}

md_status md_tokenizer_load(const char *vocab_json_path, const char *merges_txt_path, md_tokenizer **out,
                            char *err, size_t errlen)
{
    md_status st;
    md_tokenizer *t = NULL;
    if (err && errlen)
        err[0] = '\0';
    if (!vocab_json_path || !merges_txt_path || !out)
        return md_errf(err, errlen, MD_ERR_INVALID, "md_tokenizer_load: NULL argument");
    *out = NULL;
    t = calloc(1, sizeof *t);
    if (!t)
        return md_errf(err, errlen, MD_ERR_NOMEM, "md_tokenizer_load: out of memory");
    if (pthread_mutex_init(&t->cache_mu, NULL) != 0) {
        free(t);
        return md_errf(err, errlen, MD_ERR_INTERNAL, "md_tokenizer_load: pthread_mutex_init failed");
    }
    t->cache = calloc(CACHE_SLOTS, sizeof *t->cache);
    if (!t->cache) {
        st = md_errf(err, errlen, MD_ERR_NOMEM, "md_tokenizer_load: out of memory");
        goto out;
    }
    if ((st = load_vocab(t, vocab_json_path, err, errlen)) != MD_OK)
        goto out;
    if ((st = load_merges(t, merges_txt_path, err, errlen)) != MD_OK)
        goto out;
    init_byte_map(t);
    *out = t;
    t = NULL;
out:
    md_tokenizer_free(t);
    return st;
}

void md_tokenizer_free(md_tokenizer *t)
{
    if (!t)
        return;
    if (t->cache)
        for (int i = 0; i < CACHE_SLOTS; i++)
            free(t->cache[i]);
    free(t->cache);
    pthread_mutex_destroy(&t->cache_mu);
    free(t->merges);
    free(t->str_slots);
    free(t->tok_len);
    free(t->tok_off);
    free(t->arena);
    free(t);
}

int md_tokenizer_bos_id(const md_tokenizer *t) { return t->bos_id; }
int md_tokenizer_eos_id(const md_tokenizer *t) { return t->eos_id; }
int md_tokenizer_pad_id(const md_tokenizer *t) { return t->eos_id; }
int md_tokenizer_vocab_size(const md_tokenizer *t) { return t->vocab_size; }

const char *md_tokenizer_token(const md_tokenizer *t, int id)
{
    if (id < 0 || id >= t->vocab_size || t->tok_off[id] == UINT32_MAX)
        return NULL;
    return t->arena + t->tok_off[id];
}

