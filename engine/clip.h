/* clip.h - CLIP image and text encoders loaded from Hugging Face checkpoints.
 *
 * A checkpoint is a directory as published on the Hugging Face hub (e.g.
 * openai/clip-vit-base-patch32, -patch16, clip-vit-large-patch14):
 *
 *   config.json        CLIPConfig: projection_dim, text_config / vision_config (or, when present,
 *                      text_config_dict / vision_config_dict, which replace them as transformers
 *                      does), hidden sizes, heads, layers, hidden_act (quick_gelu, gelu,
 *                      gelu_new / gelu_pytorch_tanh / gelu_fast), layer_norm_eps, image_size,
 *                      patch_size, bos/eos/pad ids; "momentd_demo": true marks the demo model
 *   model.safetensors  F32, F16 or BF16 weights with transformers' CLIPModel names
 *   vocab.json, merges.txt   the byte-level BPE tokenizer
 *
 * The forward passes compute exactly what transformers' modeling_clip.py computes (the tests
 * compare with it on tiny random models: f32 to 1e-4 relative error). Weights are converted to F32
 * at load into one block (q/k/v fused per layer); the file is not kept mapped.
 *
 * Usage:
 *
 *   md_clip *m; char err[512];
 *   if (md_clip_load("models/clip-vit-base-patch32", md_backend_cpu(), &m, err, sizeof err) != MD_OK)
 *       { fprintf(stderr, "model: %s\n", err); exit(2); }
 *   float txt[md_clip_dim(m)]; int ids[MD_CLIP_MAX_TOKENS], n_ids;
 *   md_clip_embed_text(m, "a dog jumps into a pool", txt, ids, &n_ids, err, sizeof err);
 *   int s = md_clip_image_size(m);                       // pixels: n x 3 x s x s, CLIP-normalised
 *   float *img = malloc(n * md_clip_dim(m) * sizeof *img);
 *   md_clip_embed_images(m, pixels, n, img, NULL, err, sizeof err);
 *   float score = dot(txt, img, md_clip_dim(m));          // both are L2-normalised
 *   md_clip_free(m);
 *
 * Thread-safety: a loaded md_clip is read-only. md_clip_embed_text/_tokens/_images may be called
 * from any number of threads at once on the same model (each call allocates its own scratch
 * memory); md_clip_free must not run concurrently with them. Matrix products run on OpenBLAS's
 * thread pool: by default OpenBLAS uses OPENBLAS_NUM_THREADS or all cores for every call, which
 * suits one caller at a time; several concurrent callers should lower it
 * (md_backend_cpu_set_threads) so that callers x threads stays near the core count.
 *
 * Errors: every function returns an md_status and writes a NUL-terminated message into ERR
 * (size ERRLEN; ERR may be NULL when ERRLEN is 0). A model that is inconsistent, truncated or
 * unsupported is an error at load (MD_ERR_NOT_FOUND for a missing directory or file,
 * MD_ERR_INVALID for bad contents, MD_ERR_UNSUPPORTED for valid but unsupported settings),
 * never a crash.
 */
#ifndef MD_CLIP_H
#define MD_CLIP_H

#include <stddef.h>

#include "backend.h"
#include "../base/status.h"

/* The longest token sequence md_clip_embed_text produces (CLIP's context length). */
#define MD_CLIP_MAX_TOKENS 77

typedef struct md_clip md_clip;

/* Loads the checkpoint directory DIR (see the top of this file), validating config.json against
 * the tensors (names, shapes, dtypes, offsets against the file size) and the tokenizer files.
 * Runs on BE when it supports every op the towers use, else on the CPU (logged). *OUT is the
 * caller's (md_clip_free). Cost: one read of model.safetensors for the weights and one for its
 * sha256. */
md_status md_clip_load(const char *dir, const md_backend_i *be, md_clip **out, char *err, size_t errlen);
void md_clip_free(md_clip *m);

/* Writes the demo checkpoint into DIR (created if missing; files replaced): a tiny CLIP with
 * random weights drawn from SEED in the real layout (config.json with "momentd_demo": true,
 * model.safetensors, vocab.json/merges.txt with a byte-level vocabulary: 256 byte symbols,
 * their "</w>" forms, <|startoftext|>, <|endoftext|>, no merges). Its embeddings are
 * deterministic but meaningless. Load it with md_clip_load like any checkpoint. */
md_status md_clip_write_demo(const char *dir, unsigned seed, char *err, size_t errlen);

int md_clip_dim(const md_clip *m);          /* projection_dim: the joint embedding width */
int md_clip_image_size(const md_clip *m);   /* input side S in pixels */
int md_clip_patch_size(const md_clip *m);
int md_clip_n_patches(const md_clip *m);    /* P = (S / patch)^2; tokens per image are 1 + P */
int md_clip_vision_width(const md_clip *m); /* vision hidden size (768 for ViT-B) */
int md_clip_is_demo(const md_clip *m);      /* 1 for the demo model: embeddings are not meaningful */
/* Hex sha256 of model.safetensors (64 digits), for provenance of stored vectors. */
const char *md_clip_weights_sha256(const md_clip *m);
/* One line describing the model, e.g. "CLIP ViT 224px/32, width 768, 12 layers; text 512 wide,
 * 12 layers; embedding 512; F32 weights". */
const char *md_clip_describe(const md_clip *m);
/* The token string of ID (byte-level characters, "</w>" ending a word) or NULL; borrowed until
 * md_clip_free. */
const char *md_clip_token_str(const md_clip *m, int id);
/* The backend the model runs on. */
const md_backend_i *md_clip_backend(const md_clip *m);

/* Tokenises TEXT (CLIP BPE, start and end tokens, truncated to the model's context length) and
 * writes the L2-normalised projected text embedding (md_clip_dim floats) to OUT. IDS (may be
 * NULL; room for MD_CLIP_MAX_TOKENS) and *N_IDS (may be NULL) get the token ids. */
md_status md_clip_embed_text(md_clip *m, const char *text, float *out, int *ids, int *n_ids, char *err,
                             size_t errlen);
/* The same from token ids (1 <= N <= the context length, each < vocab size); pooling follows
 * transformers: the first eos_token_id, or the largest id for configs with eos_token_id 2. */
md_status md_clip_embed_tokens(md_clip *m, const int *ids, int n, float *out, char *err, size_t errlen);

/* Caps how many images md_clip_embed_images processes at once (its scratch memory grows with
 * it; by default as many as fit in 256 MiB of scratch). N <= 0 restores the default. Call it
 * before the model is shared between threads. */
void md_clip_set_max_batch(md_clip *m, int n);

/* Encodes N images. PIXELS is n x 3 x S x S floats, already CLIP-preprocessed (resized, cropped,
 * (x - mean) / std). OUT (n x dim) gets the L2-normalised image embeddings (CLIPModel's
 * image_embeds). TOKENS, when not NULL (n x (1 + P) x dim), gets every vision token of the last
 * layer after post_layernorm and visual_projection, not normalised: CLS first, then the patches
 * row-major; its CLS row is image_embeds before normalisation. Large N is processed in chunks. */
md_status md_clip_embed_images(md_clip *m, const float *pixels, int n, float *out, float *tokens, char *err,
                               size_t errlen);

#endif
