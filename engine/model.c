/* model.c - the library's model: which CLIP checkpoint is in use, its
 * provenance row in the models table, and the in-memory segment index of that
 * model, loaded from SQLite at start.
 *
 * With no model_dir configured the library writes the demo checkpoint (tiny,
 * random weights, byte-level vocabulary; engine/demo_model.c) into
 * data_dir/demo-model once and loads it through the same loader as a real
 * checkpoint, so the daemon works offline out of the box; everything it
 * answers is then marked as not meaningful.
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "library_internal.h"
#include "../base/log.h"
#include "sha256.h"
#include "temporal.h"

#define DEMO_SEED 20251126u

/* Settings that change what a stored vector means besides the weights. Bump
 * the version when the pipeline's meaning changes. */
static void preprocess_signature(const md_library *lib, char *out, size_t len)
{
    snprintf(out, len,
             "v2;size=%d;fps=%g;mean=%.8f,%.8f,%.8f;std=%.8f,%.8f,%.8f;k=%d;T=%d;s=1;overlap=0;patch_w=0%s",
             md_clip_image_size(lib->clip), lib->p.sample_fps, lib->p.mean[0], lib->p.mean[1], lib->p.mean[2],
             lib->p.std[0], lib->p.std[1], lib->p.std[2], lib->p.segment_frames, lib->p.window_frames,
             lib->p.keyframes_only ? ";keyframes" : "");
}

/* Reads image_mean / image_std from preprocessor_config.json when the checkpoint has one. */
static void read_preprocessor(md_library *lib, const char *dir)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/preprocessor_config.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f)
        return;
    char buf[16384];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf);
    cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "image_mean"), *s = cJSON_GetObjectItemCaseSensitive(j, "image_std");
    if (cJSON_GetArraySize(m) == 3 && cJSON_GetArraySize(s) == 3) {
        for (int i = 0; i < 3; i++) {
            double mv = cJSON_GetNumberValue(cJSON_GetArrayItem(m, i)), sv = cJSON_GetNumberValue(cJSON_GetArrayItem(s, i));
            if (sv > 0) {
                lib->p.mean[i] = (float)mv;
                lib->p.std[i] = (float)sv;
            }
        }
    }
    cJSON_Delete(j);
}

static md_status register_model(md_library *lib, md_errbuf *e)
{
    char sig[512], psha[65];
    preprocess_signature(lib, sig, sizeof sig);
    md_sha256 h;
    md_sha256_init(&h);
    md_sha256_update(&h, sig, strlen(sig));
    md_sha256_final_hex(&h, psha);
    /* The stored vectors depend on both CLIP and the temporal encoder. */
    const md_temporal_info *ti = md_temporal_get_info(lib->temporal);
    char wsha[65];
    md_sha256_init(&h);
    md_sha256_update(&h, md_clip_weights_sha256(lib->clip), 64);
    md_sha256_update(&h, ":", 1);
    md_sha256_update(&h, ti->sha256, strlen(ti->sha256));
    md_sha256_final_hex(&h, wsha);
    char cfg[1024];
    snprintf(cfg, sizeof cfg, "{\"describe\":\"%s\",\"preprocess\":\"%s\",\"demo\":%s}", md_clip_describe(lib->clip), sig,
             md_clip_is_demo(lib->clip) ? "true" : "false");
    md_model_rec m = {.name = lib->model_name,
                      .kind = "clip+temporal",
                      .weights_sha256 = wsha,
                      .preprocess_hash = psha,
                      .temporal_sha256 = ti->sha256,
                      .config = cfg,
                      .dim = md_clip_dim(lib->clip)};
    md_status s = md_store_model_register(lib->db, &m, &lib->model_id);
    return s == MD_OK ? MD_OK : md_fail(e, s, "cannot record the model: %s", md_store_error(lib->db));
}

static md_status add_segment(void *ctx, long long video_id, int seq, long long start_ms, long long end_ms,
                             const uint16_t *emb)
{
    md_library *lib = ctx;
    return md_index_add_f16(lib->index, video_id, seq, start_ms, end_ms, emb);
}

/* Loads every stored segment of the current model into the index. */
static md_status load_segments(md_library *lib, md_errbuf *e)
{
    long long bad = 0;
    md_status s = md_store_segments_load(lib->db, lib->model_id, md_clip_dim(lib->clip), add_segment, lib, &bad);
    if (s != MD_OK)
        return md_fail(e, s, "cannot read segments: %s", md_store_error(lib->db));
    md_info("model: %lld segments loaded into the index%s", md_index_count(lib->index),
            bad ? " (some rows were damaged and skipped)" : "");
    if (bad)
        md_warn("model: %lld damaged segment rows skipped", bad);
    return MD_OK;
}

/* Videos indexed before (with another model, or before a model existed) get a
 * new job, so that every video becomes searchable in the current embedding
 * space. Segments of other models stay stored (switching back costs nothing)
 * but are never loaded or mixed in. */
static md_status queue_reindex(md_library *lib, md_errbuf *e)
{
    int n = 0;
    md_status s = md_store_jobs_queue_reindex(lib->db, lib->model_id, &n);
    if (s != MD_OK)
        return md_fail(e, s, "cannot queue re-indexing: %s", md_store_error(lib->db));
    if (n)
        md_info("model: %d video(s) indexed with another model (or none) queued for re-indexing", n);
    return MD_OK;
}

/* The temporal encoder: the configured file, else MODEL_DIR/temporal.safetensors,
 * else a fresh untrained (identity) encoder written once to
 * DATA_DIR/temporal/<first 16 digits of the CLIP weights hash>.safetensors. */
static md_status open_temporal(md_library *lib, md_errbuf *e)
{
    char err[1024];
    md_status s;
    struct stat sb;
    const char *cfg = lib->p.temporal_path;
    if (cfg && cfg[0]) {
        snprintf(lib->temporal_path, sizeof lib->temporal_path, "%s", cfg);
    } else {
        snprintf(lib->temporal_path, sizeof lib->temporal_path, "%.4000s/temporal.safetensors", lib->model_dir);
        if (stat(lib->temporal_path, &sb) != 0) {
            char dir[PATH_MAX - 64];
            snprintf(dir, sizeof dir, "%s/temporal", lib->data_dir);
            if (mkdir(dir, 0755) != 0 && errno != EEXIST)
                return md_fail(e, MD_ERR_IO, "cannot create %s: %s", dir, strerror(errno));
            snprintf(lib->temporal_path, sizeof lib->temporal_path, "%s/%.16s.safetensors", dir,
                     md_clip_weights_sha256(lib->clip));
            if (stat(lib->temporal_path, &sb) != 0) {
                md_mamba_config c;
                md_mamba_config_default(&c, md_clip_dim(lib->clip));
                /* One bidirectional layer: 3.3% of the CLIP tower's time per window when it runs
                 * (BENCHMARKS.md, goal <= 5%); two layers cost 6.3%. */
                c.n_layers = 1;
                if ((s = md_temporal_init_write(lib->temporal_path, &c, 1, err, sizeof err)) != MD_OK)
                    return md_fail(e, s, "cannot write a fresh temporal encoder: %s", err);
                md_info("model: wrote a fresh (untrained, identity) temporal encoder to %s", lib->temporal_path);
            }
        }
    }
    if ((s = md_temporal_load(lib->temporal_path, &lib->temporal, err, sizeof err)) != MD_OK)
        return md_fail(e, s, "temporal encoder %s: %s", lib->temporal_path, err);
    const md_temporal_info *ti = md_temporal_get_info(lib->temporal);
    if (ti->cfg.d_model != md_clip_dim(lib->clip))
        return md_fail(e, MD_ERR_INVALID, "temporal encoder %s: d_model %d does not match the CLIP embedding width %d",
                       lib->temporal_path, ti->cfg.d_model, md_clip_dim(lib->clip));
    if (ti->trained)
        snprintf(lib->temporal_label, sizeof lib->temporal_label, "trained %.16s (%d layer%s)", ti->sha256,
                 ti->cfg.n_layers, ti->cfg.n_layers == 1 ? "" : "s");
    else
        snprintf(lib->temporal_label, sizeof lib->temporal_label, "untrained%s (%d layer%s)",
                 ti->identity ? ", identity: CLIP mean pooling" : "", ti->cfg.n_layers, ti->cfg.n_layers == 1 ? "" : "s");
    md_info("model: temporal encoder %s: %s", lib->temporal_path, lib->temporal_label);
    return MD_OK;
}

md_status md_model_open(md_library *lib, md_errbuf *e)
{
    char err[1024];
    md_status s;
    double t0 = md_mono_s();
    const char *dir = lib->p.model_dir;
    if (!dir || !dir[0]) {
        snprintf(lib->model_dir, sizeof lib->model_dir, "%s/demo-model", lib->data_dir);
        char cfg[PATH_MAX + 32];
        snprintf(cfg, sizeof cfg, "%s/config.json", lib->model_dir);
        struct stat sb;
        if (stat(cfg, &sb) != 0 && (s = md_clip_write_demo(lib->model_dir, DEMO_SEED, err, sizeof err)) != MD_OK)
            return md_fail(e, s, "cannot write the demo model to %s: %s", lib->model_dir, err);
        snprintf(lib->model_name, sizeof lib->model_name, "demo");
    } else {
        snprintf(lib->model_dir, sizeof lib->model_dir, "%s", dir);
        /* The checkpoint's directory name is the model's name ("clip-vit-base-patch32"). */
        char tmp[PATH_MAX];
        snprintf(tmp, sizeof tmp, "%s", dir);
        size_t l = strlen(tmp);
        while (l > 1 && tmp[l - 1] == '/')
            tmp[--l] = 0;
        const char *base = strrchr(tmp, '/');
        snprintf(lib->model_name, sizeof lib->model_name, "%.255s", base ? base + 1 : tmp);
    }
    const md_backend_i *be = md_backend_cpu();
    if (lib->p.device && lib->p.device[0] && md_backend_select(lib->p.device, &be, err, sizeof err) != MD_OK)
        return md_fail(e, MD_ERR_UNAVAILABLE, "%s", err);
    if ((s = md_clip_load(lib->model_dir, be, &lib->clip, err, sizeof err)) != MD_OK)
        return md_fail(e, s, "model %s: %s", lib->model_dir, err);
    read_preprocessor(lib, lib->model_dir);
    if ((s = open_temporal(lib, e)) != MD_OK)
        return s;
    if ((s = md_index_new(md_clip_dim(lib->clip), &lib->index)) != MD_OK)
        return md_fail(e, s, "out of memory");
    pthread_mutex_lock(&lib->db_mu);
    s = register_model(lib, e);
    if (s == MD_OK)
        s = load_segments(lib, e);
    if (s == MD_OK)
        s = queue_reindex(lib, e);
    pthread_mutex_unlock(&lib->db_mu);
    if (s != MD_OK)
        return s;
    lib->model_load_s = md_mono_s() - t0;
    md_info("model: %s (%s) loaded in %.2f s: %s", lib->model_name, lib->model_dir, lib->model_load_s,
            md_clip_describe(lib->clip));
    if (md_clip_is_demo(lib->clip))
        md_warn("model: using the DEMO model (random weights): search results are NOT meaningful; "
                "set model_dir to a Hugging Face CLIP checkpoint (see README)");
    return MD_OK;
}

void md_model_close(md_library *lib)
{
    md_temporal_free(lib->temporal);
    lib->temporal = NULL;
    md_index_free(lib->index);
    lib->index = NULL;
    md_clip_free(lib->clip);
    lib->clip = NULL;
}
