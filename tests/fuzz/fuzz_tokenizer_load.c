/* fuzz_tokenizer_load.c - libFuzzer target: md_tokenizer_load on an arbitrary vocab.json and
 * merges.txt. The input is split at its first NUL byte: vocab.json before it, merges.txt after it
 * (which may hold more NULs, a case the loader refuses); an input without a NUL is vocab.json
 * alone with an empty merges.txt.
 *
 * A pair of files that loads must give a tokenizer that works: the special ids exist and name
 * their tokens, every id below vocab_size has a token string or NULL, and encoding a few texts
 * gives <|startoftext|> ... <|endoftext|> with ids in range. */
#include "fuzz_common.h"

#include "../../engine/tokenizer.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_quiet();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int vfd = -1, mfd = -1;
    char vpath[64], mpath[64], err[512] = "";
    const uint8_t *nul = memchr(data, 0, size);
    size_t vlen = nul ? (size_t)(nul - data) : size;
    const uint8_t *merges = nul ? nul + 1 : data + size;
    size_t mlen = nul ? size - vlen - 1 : 0;
    fz_memfile(&vfd, vpath, data, vlen);
    fz_memfile(&mfd, mpath, merges, mlen);

    md_tokenizer *t = NULL;
    md_status rc = md_tokenizer_load(vpath, mpath, &t, err, sizeof err);
    fz_report(rc, err);
    if (rc != MD_OK) {
        FZ_ASSERT(t == NULL && err[0]);
        return 0;
    }
    int nv = md_tokenizer_vocab_size(t), bos = md_tokenizer_bos_id(t), eos = md_tokenizer_eos_id(t);
    FZ_ASSERT(nv >= 1 && bos >= 0 && bos < nv && eos >= 0 && eos < nv && bos != eos);
    FZ_ASSERT(strcmp(md_tokenizer_token(t, bos), "<|startoftext|>") == 0);
    FZ_ASSERT(strcmp(md_tokenizer_token(t, eos), "<|endoftext|>") == 0);
    FZ_ASSERT(md_tokenizer_token(t, -1) == NULL && md_tokenizer_token(t, nv) == NULL);
    for (int i = 0; i < nv && i < 4096; i++)
        (void)md_tokenizer_token(t, i);
    static const char *const texts[] = {"a photo of a cat", "", "hello, WORLD!! 123 <|endoftext|> x",
                                        "\xc3\xa9t\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xff\xfe"};
    for (size_t k = 0; k < sizeof texts / sizeof *texts; k++) {
        int ids[77], n = 0;
        FZ_ASSERT(md_tokenizer_encode(t, texts[k], 77, ids, &n, err, sizeof err) == MD_OK);
        FZ_ASSERT(n >= 2 && n <= 77 && ids[0] == bos && ids[n - 1] == eos);
        for (int i = 0; i < n; i++)
            FZ_ASSERT(ids[i] >= 0 && ids[i] < nv && md_tokenizer_token(t, ids[i]) != NULL);
    }
    md_tokenizer_free(t);
    return 0;
}
