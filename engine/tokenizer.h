/* tokenizer.h - CLIP's byte-level BPE tokenizer, exactly as Hugging Face transformers runs it.
 *
 * Reads a checkpoint's vocab.json (a JSON object token -> id) and merges.txt (an optional
 * "#version" line, then one merge "a b" per line, highest priority first) and turns text into the
 * ids that transformers' CLIPTokenizer / CLIPTokenizerFast (the Rust `tokenizers` pipeline; what
 * AutoTokenizer and CLIPProcessor give) produce with truncation=True, max_length=context_len:
 *
 *   1. invalid UTF-8 is replaced by U+FFFD, one per maximal invalid subpart, exactly as Python's
 *      bytes.decode("utf-8", errors="replace") (and Rust's String::from_utf8_lossy) do;
 *   2. NFC, every run of whitespace (\s) to one space, per-character lower case (no final-sigma
 *      rule; U+0130 becomes "i" + U+0307). No ftfy, no accent stripping, no control-character
 *      removal: that is what the Rust pipeline does;
 *   3. "<|startoftext|>" and "<|endoftext|>" found in that normalised text (so "<|EndOfText|>" too,
 *      also inside a run of punctuation) become their ids: the published checkpoints'
 *      tokenizer_config.json marks both special tokens "normalized" (transformers'
 *      split_special_tokens=False default). A client that must not inject them strips them first;
 *   4. pre-tokenisation of the text around them with the regex
 *        <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 *      (whitespace dropped; GPT-2's byte-level regex that follows changes nothing here);
 *   5. each piece's UTF-8 bytes mapped to GPT-2's printable byte characters, "</w>" appended to the
 *      last one, and BPE merges applied lowest rank first (leftmost on ties);
 *   6. <|startoftext|> + the first context_len - 2 ids + <|endoftext|>.
 * The Unicode data (engine/unicode_tables.h) is probed from the tokenizers library itself, so the
 * character classes and case mapping are those of its Unicode version, not the C library's.
 * Where the older Python ("slow") tokenizer of transformers 4.x differs, see
 * tests/fixtures/tokenizer/slow_vs_fast.md.
 *
 * Usage:
 *
 *   md_tokenizer *tok; char err[256];
 *   if (md_tokenizer_load("m/vocab.json", "m/merges.txt", &tok, err, sizeof err) != MD_OK) ...;
 *   int ids[77], n;
 *   if (md_tokenizer_encode(tok, "a photo of a cat", 77, ids, &n, err, sizeof err) != MD_OK) ...;
 *   // ids = {49406, 320, 1125, 539, 320, 2368, 49407}, n = 7; the caller pads (with pad_id) if it wants
 *   md_tokenizer_free(tok);
 *
 * Thread-safety: after md_tokenizer_load() returns, md_tokenizer_encode() and the accessors may be
 * called from any number of threads at once on the same tokenizer. The only mutable state is the
 * BPE cache (piece -> ids, at most MD_TOKENIZER_CACHE_MAX entries, pieces up to 64 bytes), guarded
 * by one mutex held only for a lookup or an insert, never during a merge. md_tokenizer_free() must
 * not run concurrently with any other call on the same tokenizer.
 */
#ifndef MD_TOKENIZER_H
#define MD_TOKENIZER_H

#include <stddef.h>

#include "../base/status.h"

#define MD_TOKENIZER_CACHE_MAX 10000

typedef struct md_tokenizer md_tokenizer;

/* Loads and validates both files: vocab.json must be a JSON object of unique token strings to
 * unique non-negative integer ids (< 2^24) containing "<|startoftext|>" and "<|endoftext|>";
 * every merge line must be two space-separated tokens that, like their concatenation, are in the
 * vocabulary (a later duplicate of a pair overrides the earlier rank, as in transformers).
 * Files are limited to 64 MiB. Errors: MD_ERR_NOT_FOUND (no such file), MD_ERR_IO, MD_ERR_TOO_LARGE,
 * MD_ERR_INVALID (malformed content; ERR names the file and line or token), MD_ERR_NOMEM.
 * ERR (may be NULL) receives a message on failure. On success *OUT is owned by the caller. */
md_status md_tokenizer_load(const char *vocab_json_path, const char *merges_txt_path, md_tokenizer **out,
                            char *err, size_t errlen);

/* Tokenizes UTF8 (NUL-terminated; invalid UTF-8 is replaced, see above) into IDS, which has room
 * for CONTEXT_LEN ints: <|startoftext|>, at most CONTEXT_LEN - 2 text ids, <|endoftext|>; *N_IDS
 * is the count (2..CONTEXT_LEN). Nothing is padded. Text past the truncation point is not
 * processed. MD_ERR_INVALID for a NULL argument or CONTEXT_LEN < 2, MD_ERR_NOMEM. */
md_status md_tokenizer_encode(md_tokenizer *t, const char *utf8, int context_len, int *ids, int *n_ids,
                              char *err, size_t errlen);

int md_tokenizer_bos_id(const md_tokenizer *t);     /* <|startoftext|> */
int md_tokenizer_eos_id(const md_tokenizer *t);     /* <|endoftext|> */
int md_tokenizer_pad_id(const md_tokenizer *t);     /* transformers' CLIP default: <|endoftext|> */
int md_tokenizer_vocab_size(const md_tokenizer *t); /* largest id + 1 (49408 for CLIP) */
/* The token string of ID (byte-level characters, "</w>" suffix) or NULL; borrowed until free. */
const char *md_tokenizer_token(const md_tokenizer *t, int id);

/* Frees T and its cache. NULL is a no-op. */
void md_tokenizer_free(md_tokenizer *t);

#endif
