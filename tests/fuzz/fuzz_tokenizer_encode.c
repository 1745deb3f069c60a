/* fuzz_tokenizer_encode.c - libFuzzer target: md_tokenizer_encode on arbitrary text with a small
 * fixed vocabulary (built here at start-up: the 256 byte symbols of GPT-2's bytes_to_unicode()
 * and their "</w>" forms, the two special tokens, and a few dozen merges, so that BPE really
 * merges, also across multi-byte UTF-8 characters).
 *
 * The first input byte picks the context length (2 + byte: 2..257), the rest (up to its first
 * NUL) is the text. Every result must be <|startoftext|> ... <|endoftext|> within the context,
 * with valid ids; encoding the same text again (now through the BPE cache) must give the same ids;
 * and a longer context must give a sequence that extends the shorter one's text ids. */
#include "fuzz_common.h"

#include "../../engine/tokenizer.h"

static md_tokenizer *g_tok;

/* GPT-2's bytes_to_unicode(): the byte character of B as UTF-8 into S (1 or 2 bytes). */
static int byte_char(int b, char *s)
{
    static int map[256], done;
    if (!done) {
        int n = 0;
        for (int i = 0; i < 256; i++) {
            int printable = (i >= '!' && i <= '~') || (i >= 0xA1 && i <= 0xAC) || (i >= 0xAE && i <= 0xFF);
            map[i] = printable ? i : 256 + n++;
        }
        done = 1;
    }
    int c = map[b];
    if (c < 0x80) {
        s[0] = (char)c;
        return 1;
    }
    s[0] = (char)(0xC0 | (c >> 6));
    s[1] = (char)(0x80 | (c & 0x3F));
    return 2;
}

/* Merges as "left right"; each one's concatenation joins the vocabulary. In rank order. */
static const char *const MERGES[] = {
    "t h", "th e</w>", "i n", "in g</w>", "e r", "a n", "an d</w>", "o n", "o f</w>", "c a",
    "ca t</w>", "d o", "do g</w>", "p h", "ph o", "pho t", "phot o</w>", "e s", "s t", "es t</w>", "r e",
    "l l", "ll o</w>", "h e", "he llo</w>", "1 2", "12 3</w>", "! !</w>",
    "\xc3\x83 \xc2\xa9", /* the byte characters of "é" (0xC3 0xA9) */
    "\xc3\x83\xc2\xa9 t", "t \xc3\x83\xc2\xa9",
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_quiet();
    /* vocab.json: byte symbols, their </w> forms, merged tokens, the specials. */
    size_t cap = 1 << 16, len = 0;
    char *v = malloc(cap), s[16];
    FZ_ASSERT(v);
    int id = 0;
    len += (size_t)snprintf(v + len, cap - len, "{");
    for (int eow = 0; eow < 2; eow++)
        for (int b = 0; b < 256; b++) {
            int n = byte_char(b, s);
            char esc[24];
            /* '"' and '\\' need escaping inside a JSON string. */
            int e = 0;
            for (int i = 0; i < n; i++) {
                if (s[i] == '"' || s[i] == '\\')
                    esc[e++] = '\\';
                esc[e++] = s[i];
            }
            esc[e] = 0;
            len += (size_t)snprintf(v + len, cap - len, "%s\"%s%s\": %d", id ? ", " : "", esc, eow ? "</w>" : "", id);
            id++;
        }
    char merges[4096];
    size_t ml = (size_t)snprintf(merges, sizeof merges, "#version: 0.2\n");
    for (size_t i = 0; i < sizeof MERGES / sizeof *MERGES; i++) {
        const char *sp = strchr(MERGES[i], ' ');
        len += (size_t)snprintf(v + len, cap - len, ", \"%.*s%s\": %d", (int)(sp - MERGES[i]), MERGES[i], sp + 1, id++);
        ml += (size_t)snprintf(merges + ml, sizeof merges - ml, "%s\n", MERGES[i]);
    }
    len += (size_t)snprintf(v + len, cap - len, ", \"<|startoftext|>\": %d, \"<|endoftext|>\": %d}", id, id + 1);
    FZ_ASSERT(len < cap && ml < sizeof merges);
    static int vfd = -1, mfd = -1;
    char vpath[64], mpath[64], err[512];
    fz_memfile(&vfd, vpath, (const uint8_t *)v, len);
    fz_memfile(&mfd, mpath, (const uint8_t *)merges, ml);
    if (md_tokenizer_load(vpath, mpath, &g_tok, err, sizeof err) != MD_OK) {
        fprintf(stderr, "fuzz: the fixed vocabulary does not load: %s\n", err);
        abort();
    }
    free(v);
    return 0;
}

static void check(const int *ids, int n, int ctx)
{
    FZ_ASSERT(n >= 2 && n <= ctx);
    FZ_ASSERT(ids[0] == md_tokenizer_bos_id(g_tok) && ids[n - 1] == md_tokenizer_eos_id(g_tok));
    for (int i = 0; i < n; i++)
        FZ_ASSERT(ids[i] >= 0 && ids[i] < md_tokenizer_vocab_size(g_tok));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int ctx = 2 + data[0];
    char *text = malloc(size);
    FZ_ASSERT(text);
    memcpy(text, data + 1, size - 1);
    text[size - 1] = 0;
    int a[258], b[258], big[258], na = 0, nb = 0, nbig = 0;
    char err[256];
    FZ_ASSERT(md_tokenizer_encode(g_tok, text, ctx, a, &na, err, sizeof err) == MD_OK);
    check(a, na, ctx);
    FZ_ASSERT(md_tokenizer_encode(g_tok, text, ctx, b, &nb, err, sizeof err) == MD_OK);
    FZ_ASSERT(na == nb && memcmp(a, b, (size_t)na * sizeof *a) == 0);
    /* Truncation keeps a prefix: the longest context's text ids start with this one's. */
    FZ_ASSERT(md_tokenizer_encode(g_tok, text, 257, big, &nbig, err, sizeof err) == MD_OK);
    check(big, nbig, 257);
    FZ_ASSERT(nbig >= na && memcmp(a, big, (size_t)(na - 1) * sizeof *a) == 0);
    FZ_ASSERT(na == ctx || na == nbig); /* shorter only when truncated */
    free(text);
    return 0;
}
