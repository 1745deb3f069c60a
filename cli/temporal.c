/* cli_temporal.c - `momentd init-temporal`: writes a fresh temporal encoder.
 *
 *   momentd init-temporal [--d-model N] [--layers N] [--d-state N] [--seed N] [--force] FILE
 *
 * The encoder gets Mamba's initialisation with out_proj zero, so it is exactly
 * the identity: segment embeddings are the mean of their frames' CLIP
 * embeddings until trained weights replace it. The daemon writes one like it
 * on its own when none is configured; this command is for preparing a file to
 * train or to pin with the `temporal` setting. Exit status 0 on success, 1 on
 * failure, 2 for bad usage.
 */
#define _XOPEN_SOURCE 700
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../engine/temporal.h"

int md_cli_init_temporal(int argc, char **argv);

static int usage(void)
{
    fprintf(stderr, "usage: momentd init-temporal [--d-model N (512)] [--layers N (1)] [--d-state N (16)] "
                    "[--seed N (1)] [--force] FILE\n");
    return 2;
}

static int int_arg(const char *v, int *out)
{
    char *end;
    long x = strtol(v, &end, 10);
    if (end == v || *end || x < 0 || x > 1 << 20)
        return -1;
    *out = (int)x;
    return 0;
}

int md_cli_init_temporal(int argc, char **argv)
{
    int d_model = 512, layers = 1, d_state = 16, seed = 1, force = 0;
    const char *path = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        int *dst = strcmp(a, "--d-model") == 0 ? &d_model
                   : strcmp(a, "--layers") == 0 ? &layers
                   : strcmp(a, "--d-state") == 0 ? &d_state
                   : strcmp(a, "--seed") == 0 ? &seed
                                               : NULL;
        if (dst) {
            if (i + 1 >= argc || int_arg(argv[++i], dst) != 0) {
                fprintf(stderr, "momentd: %s needs a whole number\n", a);
                return 2;
            }
        } else if (strcmp(a, "--force") == 0) {
            force = 1;
        } else if (a[0] == '-' || path) {
            return usage();
        } else {
            path = a;
        }
    }
    if (!path)
        return usage();
    struct stat sb;
    if (!force && stat(path, &sb) == 0) {
        fprintf(stderr, "momentd: %s exists; use --force to replace it\n", path);
        return 1;
    }
    md_mamba_config c;
    md_mamba_config_default(&c, d_model);
    c.n_layers = layers;
    c.d_state = d_state;
    char err[512];
    if (md_mamba_config_check(&c, err, sizeof err) != MD_OK) {
        fprintf(stderr, "momentd: %s\n", err);
        return 2;
    }
    if (md_temporal_init_write(path, &c, (uint64_t)seed, err, sizeof err) != MD_OK) {
        fprintf(stderr, "momentd: %s\n", err);
        return 1;
    }
    printf("{\"file\": \"%s\", \"d_model\": %d, \"layers\": %d, \"d_state\": %d, \"trained\": false, "
           "\"identity\": true}\n",
           path, d_model, layers, d_state);
    return 0;
}
