/* testutil.h - small helpers the unit tests share: whole-file reads and writes, the
 * repository root, removing a fixture directory, and double-precision reference ops used to
 * check the backends and the CLIP towers. Header-only (static), like harness.h. */
#ifndef MD_TEST_UTIL_H
#define MD_TEST_UTIL_H

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The whole file, NUL-terminated (so text can be used as a string); NULL on failure.
 * *LEN (may be NULL) gets the byte count. The caller frees it. */
static inline void *tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) {
        b[n] = 0;
        if (len)
            *len = (size_t)n;
    }
    return b;
}

/* The repository root relative to the current directory ("" or "../" ...), found by walking up
 * to where schema/001-init.sql is; "" when it is nowhere above (the caller's open then fails). */
static inline const char *tu_repo_root(void)
{
    static char root[64];
    static int done;
    if (!done) {
        done = 1;
        for (int up = 0; up < 6; up++) {
            char p[96];
            root[0] = 0;
            for (int i = 0; i < up; i++)
                strcat(root, "../");
            snprintf(p, sizeof p, "%sschema/001-init.sql", root);
            if (access(p, R_OK) == 0)
                return root;
        }
        root[0] = 0;
    }
    return root;
}

/* Writes N bytes to PATH; 0 on success, -1 (and a perror line) on failure. */
static inline int tu_write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        return -1;
    }
    int rc = fwrite(data, 1, n, f) == n ? 0 : -1;
    if (fclose(f) != 0)
        rc = -1;
    if (rc)
        perror(path);
    return rc;
}

/* Removes DIR and the files (and empty directories) directly inside it. */
static inline void tu_remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (unlink(p) != 0)
            rmdir(p);
    }
    closedir(d);
    rmdir(dir);
}

/* Multi-head attention over a fused q|k|v buffer ([batch * t, 3 * heads * hd]) in double
 * precision: the reference for md_backend_i.attention (see backend.h). */
static inline void tu_ref_attention(const float *qkv, int batch, int t, int heads, int hd, int causal, float *out)
{
    const int d = heads * hd;
    double *s = malloc((size_t)t * sizeof *s);
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < t; i++) {
                const float *q = qkv + ((size_t)b * t + i) * 3 * d + h * hd;
                int nk = causal ? i + 1 : t;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < nk; j++) {
                    const float *k = qkv + ((size_t)b * t + j) * 3 * d + d + h * hd;
                    double dot = 0;
                    for (int c = 0; c < hd; c++)
                        dot += (double)q[c] * k[c];
                    s[j] = dot / sqrt((double)hd);
                    mx = s[j] > mx ? s[j] : mx;
                }
                for (int j = 0; j < nk; j++)
                    sum += s[j] = exp(s[j] - mx);
                for (int c = 0; c < hd; c++) {
                    double o = 0;
                    for (int j = 0; j < nk; j++)
                        o += s[j] / sum * qkv[((size_t)b * t + j) * 3 * d + 2 * d + h * hd + c];
                    out[((size_t)b * t + i) * d + h * hd + c] = (float)o;
                }
            }
    free(s);
}

#endif
