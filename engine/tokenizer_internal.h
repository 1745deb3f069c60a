/* tokenizer_internal.h - what the two files of the CLIP tokenizer share; not a public header
 * (tokenizer.h is): only tokenizer.c (encoding) and tokenizer_load.c (vocab.json and merges.txt
 * loading, md_tokenizer_free and the accessors) include it.
 *
 * Data layout: token strings live in one arena, tok_off/tok_len indexed by id; a string -> id
 * open-addressing table (used at load time and for the 512 byte symbols); a (left id, right id)
 * -> (rank, merged id) open-addressing table for the merges; a piece -> ids cache behind a mutex. */
#ifndef MD_TOKENIZER_INTERNAL_H
#define MD_TOKENIZER_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

#define CACHE_SLOTS 16384 /* > MD_TOKENIZER_CACHE_MAX, power of two */

static const char BOS_STR[] = "<|startoftext|>";
static const char EOS_STR[] = "<|endoftext|>";

typedef struct merge_slot {
    uint64_t key; /* left << 32 | right; EMPTY_KEY when unused */
    uint32_t rank;
    int32_t id;
} merge_slot;
#define EMPTY_KEY UINT64_MAX

typedef struct cache_entry {
    uint32_t hash;
    uint16_t klen, nids;
    int32_t *ids;  /* points into the same allocation, after key */
    char key[];
} cache_entry;

struct md_tokenizer {
    char *arena;        /* all token strings, NUL-terminated */
    size_t arena_len;
    uint32_t *tok_off;  /* [vocab_size], UINT32_MAX where an id has no token */
    uint32_t *tok_len;
    int vocab_size;     /* largest id + 1 */
    int32_t *str_slots; /* string -> id table: ids, -1 empty */
    uint32_t str_mask;
    merge_slot *merges;
    uint32_t merge_mask;
    int n_merges;
    int bos_id, eos_id, unk_id;
    int32_t byte_sym[256], byte_sym_eow[256]; /* ids of the byte characters alone / + "</w>" */
    uint32_t byte_char[256];                  /* GPT-2's bytes_to_unicode() */

    pthread_mutex_t cache_mu;
    cache_entry **cache; /* [CACHE_SLOTS] */
    int cache_n;
};

static inline uint32_t hash_bytes(const void *p, size_t n)
{
    /* FNV-1a */
    const unsigned char *b = p;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 16777619u;
    }
    return h;
}

static inline uint32_t hash_u64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return (uint32_t)k;
}

#endif
