/* safetensors.h - reading (mmap) and writing safetensors files, checking everything before use.
 *
 * The format (https://github.com/huggingface/safetensors):
 *
 *   bytes 0..7        N, the header length, unsigned 64-bit little-endian
 *   bytes 8..8+N-1    the header: a UTF-8 JSON object, possibly padded with trailing spaces
 *                       { "__metadata__": {"key": "value", ...},            (optional, strings only)
 *                         "<tensor name>": {"dtype": "F32",
 *                                           "shape": [d0, d1, ...],          ([] is a scalar)
 *                                           "data_offsets": [begin, end]}, ... }
 *   bytes 8+N..       the data area; a tensor's bytes are [begin, end) relative to its start,
 *                     row-major, little-endian
 *
 * md_safetensors_open() checks, before anything is used: the file is at least 8 bytes; N fits
 * in the file and is at most 100 MB; the header is a JSON object; every tensor has a known dtype,
 * a shape of at most 8 non-negative dimensions whose element count times the dtype size does not
 * overflow and equals end - begin; begin <= end <= the data area's size; no two tensors' bytes
 * overlap; names are unique (cJSON keeps duplicates, so this is checked). Holes between tensors are
 * allowed. Any violation is MD_ERR_INVALID with a message naming the file and the tensor.
 *
 * Usage:
 *
 *   md_safetensors *st; char err[256];
 *   if (md_safetensors_open("model.safetensors", &st, err, sizeof err) != MD_OK) ...;
 *   const md_st_tensor *t = md_safetensors_find(st, "text_projection.weight");
 *   float *w = malloc(t->numel * sizeof *w);
 *   md_st_to_f32(t, w);                       // F32, F16 or BF16 -> F32
 *   md_safetensors_free(st);                  // unmaps; every md_st_tensor becomes invalid
 *
 * Ownership: the md_safetensors owns the mapping and the tensor table; pointers it hands out are
 * borrowed until md_safetensors_free(). Thread-safety: an opened file is read-only and may be
 * read from any number of threads at once; open and free are not concurrent with other calls.
 */
#ifndef MD_SAFETENSORS_H
#define MD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "../base/half.h"
#include "../base/status.h"

#define MD_ST_MAX_DIMS 8

typedef enum md_dtype {
    MD_DT_BOOL,
    MD_DT_U8,
    MD_DT_I8,
    MD_DT_F8_E5M2,
    MD_DT_F8_E4M3,
    MD_DT_I16,
    MD_DT_U16,
    MD_DT_F16,
    MD_DT_BF16,
    MD_DT_I32,
    MD_DT_U32,
    MD_DT_F32,
    MD_DT_F64,
    MD_DT_I64,
    MD_DT_U64,
    MD_DT_COUNT
} md_dtype;

/* "F32" etc.; static. */
const char *md_dtype_name(md_dtype dt);
size_t md_dtype_size(md_dtype dt);

typedef struct md_st_tensor {
    const char *name;
    md_dtype dtype;
    int ndim;
    int64_t shape[MD_ST_MAX_DIMS];
    uint64_t numel;     /* product of shape (1 for a scalar) */
    uint64_t offset;    /* begin, relative to the data area */
    uint64_t nbytes;    /* end - begin == numel * dtype size */
    const void *data;   /* into the mapping; not aligned in general */
} md_st_tensor;

typedef struct md_safetensors md_safetensors;

/* Maps PATH read-only and validates its header (see the top of this file). MD_ERR_NOT_FOUND for
 * a missing file, MD_ERR_IO for unreadable, MD_ERR_INVALID for any format violation,
 * MD_ERR_NOMEM. ERR gets a message on failure. *OUT is the caller's (md_safetensors_free). */
md_status md_safetensors_open(const char *path, md_safetensors **out, char *err, size_t errlen);
void md_safetensors_free(md_safetensors *st);

int md_safetensors_count(const md_safetensors *st);
/* Tensors in header order; NULL when I is out of range. */
const md_st_tensor *md_safetensors_at(const md_safetensors *st, int i);
/* NULL when there is no tensor NAME. */
const md_st_tensor *md_safetensors_find(const md_safetensors *st, const char *name);
/* A string of "__metadata__", or NULL. */
const char *md_safetensors_meta(const md_safetensors *st, const char *key);
/* Size of the mapped file in bytes. */
uint64_t md_safetensors_file_size(const md_safetensors *st);

/* Converts T's numel elements to F32 in DST (aligned, numel floats). F32, F16 (IEEE half,
 * subnormals/Inf/NaN included) and BF16; other dtypes are MD_ERR_UNSUPPORTED. */
md_status md_st_to_f32(const md_st_tensor *t, float *dst);

/* How many of the N floats at V are NaN or +-Inf; *FIRST (may be NULL) gets the index of the
 * first one (N when there is none). A single pass over the bits, cheap beside the conversion:
 * loaders run it on every converted tensor and refuse a file with damaged weights, which would
 * otherwise load and produce NaN embeddings that match nothing. */
uint64_t md_st_count_nonfinite(const float *v, uint64_t n, uint64_t *first);


/* A tensor to write: DATA holds numel * dtype-size little-endian bytes. */
typedef struct md_st_write {
    const char *name;
    md_dtype dtype;
    int ndim;
    int64_t shape[MD_ST_MAX_DIMS];
    const void *data;
} md_st_write;

/* Writes N tensors (in that order, data contiguous, header padded with spaces to a multiple of 8
 * as the reference writer does) plus optional METADATA pairs (META_KV: key, value, key, value,
 * ...; N_META pairs) to PATH.tmp, then renames it to PATH. MD_ERR_IO / MD_ERR_NO_SPACE /
 * MD_ERR_NOMEM / MD_ERR_INVALID (duplicate or empty name, bad shape). */
md_status md_safetensors_write(const char *path, const md_st_write *ts, int n, const char *const *meta_kv,
                               int n_meta, char *err, size_t errlen);

#endif
