/* fuzz_safetensors.c - libFuzzer target: md_safetensors_open on arbitrary bytes.
 *
 * A file that opens must keep every promise of safetensors.h: each tensor's bytes lie inside the
 * file where its data_offsets say (checked against the input itself, since reads past the end of
 * a mapping are invisible to ASan within the last page), numel x dtype size = nbytes, lookups by
 * name find it, and F32/F16/BF16 tensors convert. It is then written back with
 * md_safetensors_write and reopened: the same tensors, byte for byte (the writer under fuzzing
 * too). A file that fails must come with a message and no handle. */
#include "fuzz_common.h"

#include <sys/stat.h>

#include "../../engine/safetensors.h"

static char g_dir[128];

static void rm_dir(void)
{
    char p[160];
    snprintf(p, sizeof p, "%s/rt.safetensors", g_dir);
    unlink(p);
    rmdir(g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_quiet();
    /* The round trip's file needs a directory: the writer renames PATH.tmp to PATH. */
    fz_tmpdir("md-fuzz-st", g_dir);
    atexit(rm_dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    char path[64], err[512] = "";
    md_safetensors *st = NULL;
    md_status rc = md_safetensors_open(fz_memfile(&fd, path, data, size), &st, err, sizeof err);
    fz_report(rc, err);
    if (rc != MD_OK) {
        FZ_ASSERT(st == NULL && err[0]);
        return 0;
    }
    FZ_ASSERT(md_safetensors_file_size(st) == size && size >= 8);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | data[i];
    FZ_ASSERT(hlen <= size - 8);
    const uint8_t *area = data + 8 + hlen;
    const uint64_t area_size = size - 8 - hlen;

    int n = md_safetensors_count(st);
    FZ_ASSERT(n >= 0 && md_safetensors_at(st, -1) == NULL && md_safetensors_at(st, n) == NULL);
    md_st_write *w = calloc((size_t)n + 1, sizeof *w);
    FZ_ASSERT(w);
    for (int i = 0; i < n; i++) {
        const md_st_tensor *t = md_safetensors_at(st, i);
        FZ_ASSERT(t && t->name && t->name[0]);
        FZ_ASSERT(md_safetensors_find(st, t->name) == t);
        FZ_ASSERT(t->ndim >= 0 && t->ndim <= MD_ST_MAX_DIMS);
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            FZ_ASSERT(t->shape[d] >= 0);
            numel *= (uint64_t)t->shape[d];
        }
        FZ_ASSERT(numel == t->numel && t->numel * md_dtype_size(t->dtype) == t->nbytes);
        FZ_ASSERT(t->offset <= area_size && t->nbytes <= area_size - t->offset);
        FZ_ASSERT(memcmp(t->data, area + t->offset, t->nbytes) == 0);
        if (t->dtype == MD_DT_F32 || t->dtype == MD_DT_F16 || t->dtype == MD_DT_BF16) {
            float *f = malloc(t->numel * sizeof *f + 1);
            FZ_ASSERT(f);
            FZ_ASSERT(md_st_to_f32(t, f) == MD_OK);
            uint64_t first;
            uint64_t bad = md_st_count_nonfinite(f, t->numel, &first);
            FZ_ASSERT(bad <= t->numel && (bad ? first < t->numel : first == t->numel));
            free(f);
        }
        w[i] = (md_st_write){.name = t->name, .dtype = t->dtype, .ndim = t->ndim, .data = t->data};
        memcpy(w[i].shape, t->shape, sizeof t->shape);
    }
    (void)md_safetensors_meta(st, "format");
    FZ_ASSERT(md_safetensors_find(st, "__metadata__") == NULL);

    /* Round trip through the writer. */
    char rt[160];
    snprintf(rt, sizeof rt, "%s/rt.safetensors", g_dir);
    FZ_ASSERT(md_safetensors_write(rt, w, n, NULL, 0, err, sizeof err) == MD_OK);
    md_safetensors *back = NULL;
    rc = md_safetensors_open(rt, &back, err, sizeof err);
    if (rc != MD_OK)
        fprintf(stderr, "fuzz: reopening the written file: %s\n", err);
    FZ_ASSERT(rc == MD_OK && md_safetensors_count(back) == n);
    for (int i = 0; i < n; i++) {
        const md_st_tensor *a = md_safetensors_at(st, i), *b = md_safetensors_at(back, i);
        FZ_ASSERT(strcmp(a->name, b->name) == 0 && a->dtype == b->dtype && a->ndim == b->ndim);
        FZ_ASSERT(memcmp(a->shape, b->shape, sizeof a->shape) == 0 && a->nbytes == b->nbytes);
        FZ_ASSERT(memcmp(a->data, b->data, a->nbytes) == 0);
    }
    md_safetensors_free(back);
    free(w);
    md_safetensors_free(st);
    return 0;
}
