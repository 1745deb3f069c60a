/* gen_seeds.c - writes the seed files of the fuzz corpus (tests/fuzz/corpus/<target>/) that the
 * project's own writers produce: safetensors files (md_safetensors_write), the demo CLIP
 * checkpoint's config.json and tokenizer files (md_clip_write_demo), temporal encoders
 * (md_temporal_init_write, md_temporal_write), plus broken variants and the request seeds of
 * fuzz_http. Run by `make fuzz-corpus` through make-corpus.sh, which adds the ffmpeg-made videos;
 * the output is committed, so this runs only when a format changes.
 *
 *   gen_seeds OUT_DIR PICTURE.png   (OUT_DIR/fuzz_<target>/ must exist; the picture goes into a
 *                                    query-picture request of fuzz_http)
 */
#define _XOPEN_SOURCE 700
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../engine/clip.h"
#include "../../engine/mamba.h"
#include "../../engine/safetensors.h"
#include "../../engine/temporal.h"

static const char *g_out;

#define FAIL(...)                                                                                      \
    do {                                                                                               \
        fprintf(stderr, "gen_seeds: " __VA_ARGS__);                                                    \
        fputc('\n', stderr);                                                                           \
        exit(1);                                                                                       \
    } while (0)

static void path_of(char *p, size_t n, const char *target, const char *name)
{
    snprintf(p, n, "%s/fuzz_%s/%s", g_out, target, name);
}

static void write_bytes(const char *target, const char *name, const void *data, size_t n)
{
    char p[1024];
    path_of(p, sizeof p, target, name);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0)
        FAIL("cannot write %s", p);
}

static void write_str(const char *target, const char *name, const char *s) { write_bytes(target, name, s, strlen(s)); }

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        FAIL("cannot read %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n)
        FAIL("cannot read %s", path);
    fclose(f);
    b[n] = 0;
    *len = (size_t)n;
    return b;
}

/* A safetensors file from a raw header (its true length in front) and NDATA data bytes. */
static void raw_st(const char *target, const char *name, const char *hdr, size_t ndata)
{
    size_t hl = strlen(hdr), n = 8 + hl + ndata;
    unsigned char *b = calloc(1, n);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, hdr, hl);
    for (size_t i = 0; i < ndata; i++)
        b[8 + hl + i] = (unsigned char)(0x3c + i % 7);
    write_bytes(target, name, b, n);
    free(b);
}

static void gen_safetensors(const char *tmp)
{
    const char *T = "safetensors";
    char p[1024], err[256];
    static const float f32[6] = {1, -2, 0.5f, 3e-39f, 65504, -0.0f};
    static const uint16_t f16[4] = {0x3c00, 0x7c00, 0x0001, 0xc000};
    static const uint16_t bf16[4] = {0x3f80, 0xff80, 0x7fc0, 0x0000};
    md_st_write w[3] = {{"a.weight", MD_DT_F32, 2, {2, 3}, f32},
                        {"b.bias", MD_DT_F16, 1, {4}, f16},
                        {"c", MD_DT_BF16, 2, {2, 2}, bf16}};
    static const char *const meta[] = {"format", "pt", "note", "seed"};
    path_of(p, sizeof p, T, "floats.safetensors");
    if (md_safetensors_write(p, w, 3, meta, 2, err, sizeof err) != MD_OK)
        FAIL("%s", err);

    /* One tensor of every dtype, a scalar and an empty one. */
    static const uint8_t bytes[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    md_st_write all[MD_DT_COUNT + 2];
    char names[MD_DT_COUNT][16];
    int n = 0;
    for (int d = 0; d < MD_DT_COUNT; d++) {
        snprintf(names[d], sizeof names[d], "t_%s", md_dtype_name((md_dtype)d));
        all[n++] = (md_st_write){names[d], (md_dtype)d, 1, {(int64_t)(16 / md_dtype_size((md_dtype)d)) / 2}, bytes};
    }
    all[n++] = (md_st_write){"scalar", MD_DT_F32, 0, {0}, bytes};
    all[n++] = (md_st_write){"empty", MD_DT_U8, 2, {0, 4}, bytes};
    path_of(p, sizeof p, T, "all-dtypes.safetensors");
    if (md_safetensors_write(p, all, n, NULL, 0, err, sizeof err) != MD_OK)
        FAIL("%s", err);
    path_of(p, sizeof p, T, "empty.safetensors");
    if (md_safetensors_write(p, NULL, 0, NULL, 0, err, sizeof err) != MD_OK)
        FAIL("%s", err);

    /* Broken on purpose: each violates one check of safetensors.h. */
    raw_st(T, "bad-overlap.safetensors",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
           12);
    raw_st(T, "bad-dup-name.safetensors",
           "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
           "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
           2);
    raw_st(T, "bad-past-end.safetensors", "{\"a\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]}}", 6);
    raw_st(T, "bad-shape-bytes.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3,3],\"data_offsets\":[0,8]}}", 8);
    raw_st(T, "bad-dtype.safetensors", "{\"a\":{\"dtype\":\"Q4_K\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
    raw_st(T, "bad-meta.safetensors",
           "{\"__metadata__\":{\"k\":1},\"a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
    raw_st(T, "bad-trailing.safetensors", "{\"a\":{\"dtype\":\"I8\",\"shape\":[],\"data_offsets\":[0,1]}} x", 1);
    raw_st(T, "bad-huge-dims.safetensors",
           "{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 8);
    unsigned char lie[16] = {0xff, 0xff, 0xff, 0, 0, 0, 0, 0, '{', '}'};
    write_bytes(T, "bad-header-length.safetensors", lie, sizeof lie);
    size_t len;
    path_of(p, sizeof p, T, "floats.safetensors");
    char *fl = read_all(p, &len);
    write_bytes(T, "bad-truncated.safetensors", fl, len - 5);
    free(fl);
    (void)tmp;
}

static void gen_clip(const char *tmp)
{
    char dir[1024], p[1100], err[256];
    size_t n;
    snprintf(dir, sizeof dir, "%s/demo", tmp);
    if (md_clip_write_demo(dir, 1, err, sizeof err) != MD_OK)
        FAIL("%s", err);
    snprintf(p, sizeof p, "%s/config.json", dir);
    char *cfg = read_all(p, &n);
    write_bytes("clip_config", "demo-config.json", cfg, n);
    free(cfg);
    /* transformers 4.x's hub layout: *_config_dict, nulls, [h, w] sizes, gelu variants. */
    write_str("clip_config", "hub-dict.json",
              "{\"model_type\":\"clip\",\"projection_dim\":64,\"text_config\":null,"
              "\"text_config_dict\":{\"hidden_size\":64,\"intermediate_size\":256,\"num_hidden_layers\":1,"
              "\"num_attention_heads\":4,\"hidden_act\":\"gelu_pytorch_tanh\",\"layer_norm_eps\":1e-6,"
              "\"vocab_size\":514,\"max_position_embeddings\":100,\"bos_token_id\":512,\"eos_token_id\":2,"
              "\"pad_token_id\":null},\"vision_config_dict\":{\"hidden_size\":48,\"intermediate_size\":96,"
              "\"num_hidden_layers\":2,\"num_attention_heads\":3,\"hidden_act\":\"gelu\",\"image_size\":[64,64],"
              "\"patch_size\":[16,16],\"num_channels\":3},\"momentd_demo\":false}");
    write_str("clip_config", "defaults.json", "{}");
    write_str("clip_config", "bad-heads.json", "{\"vision_config\":{\"hidden_size\":30,\"num_attention_heads\":4}}");
    write_str("clip_config", "bad-types.json",
              "{\"projection_dim\":\"512\",\"text_config\":[1,2],\"vision_config\":{\"image_size\":[224,225]}}");
    write_str("clip_config", "bad-range.json",
              "{\"text_config\":{\"num_hidden_layers\":-1,\"eos_token_id\":[2],\"layer_norm_eps\":0},"
              "\"vision_config\":{\"patch_size\":1e300,\"hidden_act\":\"relu\"}}");
    write_str("clip_config", "bad-syntax.json", "{\"text_config\": {\"hidden_size\": 64,,}");

    /* Tokenizer files: vocab.json, a NUL, merges.txt (fuzz_tokenizer_load's layout). */
    snprintf(p, sizeof p, "%s/vocab.json", dir);
    char *v = read_all(p, &n);
    size_t ml;
    snprintf(p, sizeof p, "%s/merges.txt", dir);
    char *m = read_all(p, &ml);
    char *both = malloc(n + 1 + ml);
    memcpy(both, v, n);
    both[n] = 0;
    memcpy(both + n + 1, m, ml);
    write_bytes("tokenizer_load", "demo-vocab-merges", both, n + 1 + ml);
    free(both);
    free(v);
    free(m);
    static const char tiny[] = "{\"<|startoftext|>\": 0, \"<|endoftext|>\": 1, \"a\": 2, \"b\": 3, \"ab\": 4, "
                               "\"a</w>\": 5, \"b</w>\": 6, \"ab</w>\": 7, \"c\": 8, \"abc</w>\": 9, \"c</w>\": 10, "
                               "\"\\u00e9\": 11, \"\\\"</w>\": 12}"
                               "\0#version: 0.2\na b\na b</w>\nab c</w>\r\na b\n";
    write_bytes("tokenizer_load", "tiny-merges", tiny, sizeof tiny - 1);
    static const char sparse[] = "{\"<|startoftext|>\": 7, \"<|endoftext|>\": 1000, \"x\": 3}";
    write_bytes("tokenizer_load", "sparse-ids", sparse, sizeof sparse - 1);
    static const char bad1[] = "{\"<|startoftext|>\": 0, \"<|endoftext|>\": 1, \"a\": 2}\0a q\n";
    write_bytes("tokenizer_load", "bad-merge-unknown", bad1, sizeof bad1 - 1);
    static const char bad2[] = "{\"<|startoftext|>\": 0, \"<|endoftext|>\": 0}";
    write_bytes("tokenizer_load", "bad-dup-id", bad2, sizeof bad2 - 1);
    static const char bad3[] = "{\"<|startoftext|>\": 0, \"<|endoftext|>\": 1, \"a\": 2, \"aa\": 3}\0a a\n\0a\n";
    write_bytes("tokenizer_load", "bad-nul-in-merges", bad3, sizeof bad3 - 1);
    static const char bad4[] = "{\"<|startoftext|>\": 0, \"a\": 1.5}";
    write_bytes("tokenizer_load", "bad-id", bad4, sizeof bad4 - 1);
}

static void gen_encode(void)
{
    /* First byte: context length - 2. */
    static const struct {
        const char *name, *text;
    } T[] = {
        {"photo", "\x4b" "a photo of a cat"},
        {"merges", "\x4b" "the thing and the dog of photo hello 123 !! test rest"},
        {"unicode", "\x4b" "\xc3\xa9t\xc3\xa9 \xc3\x89T\xc3\x89 \xc4\xb0stanbul \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e "
                    "\xf0\x9f\x90\xb6 \xce\xa3\xce\xb9\xcf\x83"},
        {"invalid-utf8", "\x10" "a\xff\xfe b\xc3 c\xe6\x97 d\xf0\x9f\x90 e\xed\xa0\x80 f\xc0\xaf"},
        {"specials", "\x20" "<|startoftext|>x<|EndOfText|>y <|endoftext|><|endoftext|>!!<|startoftext|>"},
        {"whitespace", "\x05" " \t\n\r\v\f a  \xc2\xa0 b \xe3\x80\x80 c"},
        {"contractions", "\xff" "it's we're they've I'm you'll he'd don't 'S 'T"},
        {"short-context", "\x00" "truncated to nothing"},
        {"digits-punct", "\x30" "1234567890 ...,,;;!!?? (a)[b]{c} x+y=z"},
    };
    for (size_t i = 0; i < sizeof T / sizeof *T; i++)
        write_bytes("tokenizer_encode", T[i].name, T[i].text, strlen(T[i].text + 1) + 1);
    /* A long text: truncation at every context. */
    char longt[2048];
    longt[0] = (char)200;
    size_t o = 1;
    while (o + 16 < sizeof longt)
        o += (size_t)snprintf(longt + o, sizeof longt - o, "word%zu ", o % 97);
    write_bytes("tokenizer_encode", "long", longt, o);
}

static void gen_temporal(void)
{
    const char *T = "temporal";
    char p[1024], err[256];
    md_mamba_config c;
    md_mamba_config_default(&c, 8);
    c.n_layers = 1;
    c.d_state = 4;
    c.d_conv = 2;
    c.expand = 1;
    path_of(p, sizeof p, T, "init-bidir.safetensors");
    if (md_temporal_init_write(p, &c, 1, err, sizeof err) != MD_OK)
        FAIL("%s", err);
    /* Also a seed for the safetensors target: a real file with metadata. */
    path_of(p, sizeof p, "safetensors", "temporal.safetensors");
    if (md_temporal_init_write(p, &c, 1, err, sizeof err) != MD_OK)
        FAIL("%s", err);
    md_mamba_config z = c;
    z.n_layers = 0;
    path_of(p, sizeof p, T, "init-zero-layers.safetensors");
    if (md_temporal_init_write(p, &z, 2, err, sizeof err) != MD_OK)
        FAIL("%s", err);

    /* Forward only, every optional part present (biases, final norm), two layers. */
    md_mamba_config f = c;
    f.n_layers = 2;
    f.dirs = MD_MAMBA_FWD;
    f.in_proj_bias = f.out_proj_bias = f.final_norm = 1;
    f.dt_rank = 3;
    md_mamba *m = NULL;
    if (md_mamba_new(&f, &m, err, sizeof err) != MD_OK)
        FAIL("%s", err);
    for (size_t i = 0; i < m->mem_floats; i++)
        m->mem[i] = (float)((i * 37) % 19) / 19.0f - 0.4f;
    path_of(p, sizeof p, T, "fwd-biases-norm.safetensors");
    if (md_temporal_write(p, m, 1, "fuzz seed", err, sizeof err) != MD_OK)
        FAIL("%s", err);
    /* Refused: a NaN weight, and an A_log that would overflow A = -exp(A_log). */
    m->layers[1].dir[0].D[3] = NAN;
    path_of(p, sizeof p, T, "bad-nan.safetensors");
    if (md_temporal_write(p, m, 0, NULL, err, sizeof err) != MD_OK)
        FAIL("%s", err);
    m->layers[1].dir[0].D[3] = 1;
    m->layers[0].dir[0].A_log[1] = 100;
    path_of(p, sizeof p, T, "bad-a-log.safetensors");
    if (md_temporal_write(p, m, 0, NULL, err, sizeof err) != MD_OK)
        FAIL("%s", err);
    md_mamba_free(m);
    /* Safetensors without the metadata a temporal encoder needs. */
    raw_st(T, "bad-no-metadata.safetensors",
           "{\"__metadata__\":{\"d_model\":\"8\",\"n_layers\":\"x\"},"
           "\"norm_f.weight\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,32]}}",
           32);
}

/* fuzz_http's layout: a kind byte, then the request's variable part. */
static void http_seed(const char *name, int kind, const void *rest, size_t n)
{
    unsigned char *b = malloc(n + 1);
    b[0] = (unsigned char)kind;
    memcpy(b + 1, rest, n);
    write_bytes("http", name, b, n + 1);
    free(b);
}

static void http_str(const char *name, int kind, const char *rest) { http_seed(name, kind, rest, strlen(rest)); }

static void gen_http(const char *png_path)
{
    http_str("search-get", 0, "q=a+dog+jumps&k=5&offset=0&min_score=0.1&videos=1,2,3");
    http_str("search-get-video", 0, "video_id=1&t=12.5&k=3&text=%E2%9C%93");
    http_str("search-json", 1, "{\"q\":\"a dog\",\"k\":3,\"offset\":1,\"min_score\":-0.5,\"videos\":[1,2]}");
    http_str("search-json-bad", 1, "{\"q\":7,\"k\":1e400,\"videos\":\"1,x\",\"t\":null}");
    http_str("index-json", 2, "{\"paths\":[\"/tmp/a.mp4\",\"relative.mp4\",\"\"]}");
    http_str("ground-json", 3, "{\"q\":\"a car turns left\",\"top_n\":3,\"curve\":true}");
    http_str("ground-get", 4, "q=car&top_n=2&curve=1");
    http_str("list-get", 7, "limit=10&offset=9007199254740993");
    http_str("route-delete", 8, "\x02v1/videos/18446744073709551617");
    http_str("route-get-job", 8, "\x07v1/jobs/1?x=%zz");
    http_str("route-options", 8, "\x05v1/search");
    http_str("route-metrics", 8, "\x07metrics");
    http_str("upload-raw", 9, "not a video at all");
    static const char mp_up[] = "--fuzzbnd\r\nContent-Disposition: form-data; name=\"file\"; filename=\"clip.mp4\"\r\n"
                                "Content-Type: video/mp4\r\n\r\n\x00\x00\x00\x18" "ftypmp42 garbage\r\n--fuzzbnd--\r\n";
    http_seed("upload-multipart", 6, mp_up, sizeof mp_up - 1);
    /* A query picture: a tiny PNG as the file part, plus form fields. */
    size_t pl;
    char *png = read_all(png_path, &pl);
    const char *head = "--fuzzbnd\r\nContent-Disposition: form-data; name=\"k\"\r\n\r\n4\r\n"
                       "--fuzzbnd\r\nContent-Disposition: form-data; name=\"min_score\"\r\n\r\n0.05\r\n"
                       "--fuzzbnd\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q.png\"\r\n"
                       "Content-Type: image/png\r\n\r\n";
    const char *tail = "\r\n--fuzzbnd--\r\n";
    size_t hl = strlen(head), tl = strlen(tail);
    char *body = malloc(hl + pl + tl);
    memcpy(body, head, hl);
    memcpy(body + hl, png, pl);
    memcpy(body + hl + pl, tail, tl);
    http_seed("search-picture", 5, body, hl + pl + tl);
    free(body);
    free(png);
    http_str("search-multipart-nofile", 5,
             "--fuzzbnd\r\nContent-Disposition: form-data; name=\"q\"\r\n\r\ndog\r\n--fuzzbnd--\r\n");
}

int main(int argc, char **argv)
{
    if (argc != 3)
        FAIL("usage: gen_seeds OUT_DIR PICTURE.png");
    g_out = argv[1];
    char tmp[] = "/tmp/md-gen-seeds-XXXXXX";
    if (!mkdtemp(tmp))
        FAIL("mkdtemp");
    gen_safetensors(tmp);
    gen_clip(tmp);
    gen_encode();
    gen_temporal();
    gen_http(argv[2]);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        FAIL("cannot remove %s", tmp);
    return 0;
}
