/* fuzz_clip_config.c - libFuzzer target: CLIP's config.json parsing (md_clip_parse_config,
 * engine/clip_internal.h) on arbitrary bytes, the buffer exactly the input (no NUL after it, so
 * an over-read is an ASan report).
 *
 * A config that parses must satisfy what the loader goes on to rely on: widths divisible by the
 * head counts, square patches no larger than the image, a context of 2..77 tokens, a known
 * activation, values inside the ranges clip_load.c states. A refused one needs a message. */
#include "fuzz_common.h"

#include "../../engine/clip_internal.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_quiet();
    return 0;
}

static void check_tower(const tower_cfg *t)
{
    FZ_ASSERT(t->hidden >= 1 && t->hidden <= 16384 && t->inter >= 1 && t->inter <= 65536);
    FZ_ASSERT(t->layers >= 0 && t->layers <= 256 && t->heads >= 1 && t->heads <= 1024);
    FZ_ASSERT(t->hidden % t->heads == 0);
    FZ_ASSERT(t->eps > 0 && t->eps <= 1);
    FZ_ASSERT(t->act == MD_OP_QUICK_GELU || t->act == MD_OP_GELU || t->act == MD_OP_GELU_TANH);
    FZ_ASSERT(memchr(t->act_name, 0, sizeof t->act_name) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512] = "";
    md_clip *m = calloc(1, sizeof *m);
    FZ_ASSERT(m);
    md_status rc = md_clip_parse_config("config.json", (const char *)data, size, m, err, sizeof err);
    fz_report(rc, err);
    if (rc != MD_OK) {
        FZ_ASSERT(err[0] && (rc == MD_ERR_INVALID || rc == MD_ERR_UNSUPPORTED));
    } else {
        check_tower(&m->v.c);
        check_tower(&m->t.c);
        FZ_ASSERT(m->dim >= 1 && m->dim <= 16384);
        FZ_ASSERT(m->v.c.channels == 3 && m->v.c.patch >= 1 && m->v.c.patch <= m->v.c.image);
        FZ_ASSERT(m->v.c.image <= 8192 && m->grid == m->v.c.image / m->v.c.patch && m->grid >= 1);
        FZ_ASSERT(m->t.c.vocab >= 1 && m->t.c.vocab <= 1 << 24);
        FZ_ASSERT(m->t.c.max_pos >= 2 && m->ctx >= 2 && m->ctx <= MD_CLIP_MAX_TOKENS && m->ctx <= m->t.c.max_pos);
        FZ_ASSERT(m->demo == 0 || m->demo == 1);
    }
    free(m);
    return 0;
}
