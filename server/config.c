/* config.c - the settings table and its three sources (file, flags, environment).
 *
 * To add a setting: add a field to md_config, a row to SETTINGS below, and a
 * line to deploy/momentd.conf and the README's table. A setting the engine takes
 * gets its range from engine/momentd.h ("Limits"), never a number of its own; a
 * check that one value cannot show (the file system, other settings) is the
 * row's check function, run once every source is in.
 */
#define _XOPEN_SOURCE 700
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef enum { T_STR, T_INT, T_SIZE, T_DOUBLE, T_LIST, T_ENUM } cfg_type;

/* A row's check of what one value cannot show: the file system, other settings. Runs after every
 * source was read, in table order; writes WHY (without the setting's name) on failure and may
 * rewrite the field (allowed_roots are canonicalised). */
typedef md_status (*setting_check_fn)(md_config *cfg, char *why, size_t len);

typedef struct setting {
    const char *name;
    cfg_type type;
    const char *def;     /* default as text, parsed like any other source */
    double min, max;     /* T_INT, T_SIZE, T_DOUBLE: the range, inclusive */
    const char *choices; /* T_ENUM: "a|b|c" */
    size_t off;          /* offset of the field in md_config */
    size_t count_off;    /* T_LIST: offset of the int count */
    const char *help;
    setting_check_fn check; /* NULL: the type and range say it all */
} setting;

static md_status check_bind(md_config *cfg, char *why, size_t len);
static md_status check_data_dir(md_config *cfg, char *why, size_t len);
static md_status check_model_dir(md_config *cfg, char *why, size_t len);
static md_status check_allowed_roots(md_config *cfg, char *why, size_t len);
static md_status check_cors_origins(md_config *cfg, char *why, size_t len);
static md_status check_window_frames(md_config *cfg, char *why, size_t len);
static md_status check_temporal(md_config *cfg, char *why, size_t len);

/* The ranges of settings that the engine takes are the engine's (momentd.h, "Limits"), so that
 * md_library_params_check and this table cannot disagree. */
#define F(f) offsetof(md_config, f)
static const setting SETTINGS[] = {
    {"bind", T_STR, "127.0.0.1", 0, 0, NULL, F(bind), 0, "IP address to listen on (0.0.0.0 for all interfaces)",
     check_bind},
    {"port", T_INT, "8080", 0, 65535, NULL, F(port), 0, "TCP port; 0 picks a free port and logs it", NULL},
    {"data_dir", T_STR, "./data", 0, 0, NULL, F(data_dir), 0, "database and uploaded videos", check_data_dir},
    {"model_dir", T_STR, "", 0, 0, NULL, F(model_dir), 0, "Hugging Face CLIP checkpoint directory (empty: none)",
     check_model_dir},
    {"max_upload", T_SIZE, "4G", MD_MAX_UPLOAD_MIN, MD_MAX_UPLOAD_MAX, NULL, F(max_upload), 0,
     "largest accepted upload, bytes with optional K/M/G/T suffix", NULL},
    {"workers", T_INT, "2", MD_WORKERS_MIN, MD_WORKERS_MAX, NULL, F(workers), 0, "indexing worker threads", NULL},
    {"http_threads", T_INT, "0", 0, 256, NULL, F(http_threads), 0,
     "searches and groundings computed at once, 0: one per CPU core (every connection has its own thread; "
     "more searches wait their turn, 30 s at most)", NULL},
    {"allowed_roots", T_LIST, "", 0, 0, NULL, F(allowed_roots), F(n_allowed_roots),
     "comma-separated directories that POST /v1/index may read (empty: none)", check_allowed_roots},
    {"api_key", T_STR, "", 0, 0, NULL, F(api_key), 0,
     "if set, every request except /v1/health needs 'Authorization: Bearer KEY'", NULL},
    {"cors_origins", T_LIST, "", 0, 0, NULL, F(cors_origins), F(n_cors_origins),
     "comma-separated browser origins allowed by CORS, or * (empty: none)", check_cors_origins},
    {"log_level", T_ENUM, "info", 0, 0, "debug|info|warn|error", F(log_level), 0, "log verbosity", NULL},
    {"device", T_ENUM, "auto", 0, 0, "auto|cpu|cuda", F(device), 0, "compute backend", NULL},
    {"gpu_mem", T_SIZE, "0", 0, (double)(1LL << 50), NULL, F(gpu_mem), 0,
     "GPU memory momentd may use, bytes with optional K/M/G suffix (0: all the device has); batch sizes "
     "fit it, and work that does not fit fails with a clear error", NULL},
    {"sample_fps", T_DOUBLE, "1", MD_SAMPLE_FPS_MIN, MD_SAMPLE_FPS_MAX, NULL, F(sample_fps), 0,
     "frames sampled per second of video", NULL},
    {"segment_frames", T_INT, "4", MD_SEGMENT_FRAMES_MIN, MD_SEGMENT_FRAMES_MAX, NULL, F(segment_frames), 0,
     "sampled frames per stored segment (k): a segment spans k / sample_fps seconds", NULL},
    {"window_frames", T_INT, "32", MD_WINDOW_FRAMES_MIN, MD_WINDOW_FRAMES_MAX, NULL, F(window_frames), 0,
     "frames the temporal encoder sees at once (T); a multiple of segment_frames", check_window_frames},
    {"temporal", T_STR, "", 0, 0, NULL, F(temporal), 0,
     "temporal.safetensors to use (empty: MODEL_DIR/temporal.safetensors if present, else a fresh untrained "
     "encoder kept in DATA_DIR/temporal/)", check_temporal},
    {"keyframes_only", T_INT, "0", 0, 1, NULL, F(keyframes_only), 0,
     "1: archive mode, decode only keyframes when they are at least as frequent as samples (faster; a sample "
     "may be up to one keyframe interval early)", NULL},
    {"threads", T_INT, "0", 0, 256, NULL, F(threads), 0,
     "math threads per worker (OpenBLAS); 0: cores / workers, at least 1", NULL},
    {"job_retries", T_INT, "3", 0, MD_JOB_RETRIES_MAX, NULL, F(job_retries), 0,
     "times a job interrupted by a crash is resumed before it is failed", NULL},
    {"decode_in_process", T_INT, "0", 0, 1, NULL, F(decode_in_process), 0,
     "1: probe and decode files in the daemon's own process instead of sandboxed worker processes (debugging "
     "only: a file that crashes FFmpeg then takes the daemon down)", NULL},
    {"decode_mem_limit", T_SIZE, "2G", 0, (double)(1LL << 50), NULL, F(decode_mem_limit), 0,
     "address space each decode worker may use, bytes with optional K/M/G suffix (0: no limit); a file that "
     "needs more fails its job with 'decoder exceeded its memory limit'", NULL},
    {"allow_nested_media", T_INT, "0", 0, 1, NULL, F(allow_nested_media), 0,
     "1: archive files (POST /v1/index) may open other local files (HLS playlists, concat lists, external "
     "references); they are then decoded in-process. Uploads and picture queries never may", NULL},
    {"debug_job_delay_ms", T_INT, "0", 0, MD_DEBUG_JOB_DELAY_MS_MAX, NULL, F(debug_job_delay_ms), 0,
     "test hook: pause before each job and after each committed window (keep 0)", NULL},
};
#define N_SETTINGS (sizeof SETTINGS / sizeof SETTINGS[0])

static const setting *find_setting(const char *name, size_t len)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const char *n = SETTINGS[i].name;
        if (strlen(n) != len)
            continue;
        size_t j = 0;
        for (; j < len; j++) {
            char c = name[j] == '-' ? '_' : name[j];
            if (c != n[j])
                break;
        }
        if (j == len)
            return &SETTINGS[i];
    }
    return NULL;
}

static void seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = 0;
    return s;
}

static md_status parse_size(const char *v, long long *out)
{
    errno = 0;
    char *end;
    double x = strtod(v, &end);
    if (end == v || errno || x < 0)
        return MD_ERR_INVALID;
    while (*end == ' ')
        end++;
    double mul = 1;
    switch (toupper((unsigned char)*end)) {
    case 0: break;
    case 'K': mul = 1024.0; break;
    case 'M': mul = 1024.0 * 1024; break;
    case 'G': mul = 1024.0 * 1024 * 1024; break;
    case 'T': mul = 1024.0 * 1024 * 1024 * 1024; break;
    default: return MD_ERR_INVALID;
    }
    if (*end) {
        end++;
        if (toupper((unsigned char)*end) == 'I')
            end++;
        if (toupper((unsigned char)*end) == 'B')
            end++;
        if (*end)
            return MD_ERR_INVALID;
    }
    if (x * mul > 9e18)
        return MD_ERR_INVALID;
    *out = (long long)(x * mul);
    return MD_OK;
}

static void free_field(md_config *cfg, const setting *s)
{
    char *base = (char *)cfg;
    if (s->type == T_STR || s->type == T_ENUM) {
        char **p = (char **)(base + s->off);
        free(*p);
        *p = NULL;
    } else if (s->type == T_LIST) {
        char **items = (char **)(base + s->off);
        int *n = (int *)(base + s->count_off);
        for (int i = 0; i < *n; i++) {
            free(items[i]);
            items[i] = NULL;
        }
        *n = 0;
    }
}

/* Parses VALUE into the field of S. WHERE names the source for messages. */
static md_status set_value(md_config *cfg, const setting *s, const char *value, const char *where, char *err,
                           size_t errlen)
{
    char *base = (char *)cfg;
    switch (s->type) {
    case T_STR:
    case T_ENUM: {
        if (s->type == T_ENUM) {
            size_t vl = strlen(value);
            const char *c = s->choices;
            int ok = 0;
            while (*c) {
                size_t l = strcspn(c, "|");
                if (l == vl && strncmp(c, value, l) == 0)
                    ok = 1;
                c += l + (c[l] == '|');
            }
            if (!ok) {
                seterr(err, errlen, "setting '%s' (%s): '%s' is not one of %s", s->name, where, value, s->choices);
                return MD_ERR_INVALID;
            }
        }
        char *dup = strdup(value);
        if (!dup)
            return MD_ERR_NOMEM;
        free_field(cfg, s);
        *(char **)(base + s->off) = dup;
        return MD_OK;
    }
    case T_INT:
    case T_SIZE: {
        long long v = 0;
        md_status st = MD_OK;
        if (s->type == T_SIZE) {
            st = parse_size(value, &v);
        } else {
            errno = 0;
            char *end;
            v = strtoll(value, &end, 10);
            if (end == value || *end || errno)
                st = MD_ERR_INVALID;
        }
        if (st != MD_OK) {
            seterr(err, errlen, "setting '%s' (%s): '%s' is not a %s", s->name, where, value,
                   s->type == T_SIZE ? "size (e.g. 512M, 4G)" : "whole number");
            return MD_ERR_INVALID;
        }
        if ((double)v < s->min || (double)v > s->max) {
            seterr(err, errlen, "setting '%s' (%s): %lld is out of range [%lld, %lld]", s->name, where, v,
                   (long long)s->min, (long long)s->max);
            return MD_ERR_INVALID;
        }
        *(long long *)(base + s->off) = v;
        return MD_OK;
    }
    case T_DOUBLE: {
        char *end;
        double v = strtod(value, &end);
        /* strtod takes "nan" and "inf": they are words here, not numbers. */
        if (end == value || *end || isnan(v)) {
            seterr(err, errlen, "setting '%s' (%s): '%s' is not a number", s->name, where, value);
            return MD_ERR_INVALID;
        }
        /* Inside the range also means finite; "1e400" parses as infinity (ERANGE) and fails here. */
        if (!(v >= s->min && v <= s->max)) {
            seterr(err, errlen, "setting '%s' (%s): %s is out of range [%g, %g]", s->name, where, value, s->min,
                   s->max);
            return MD_ERR_INVALID;
        }
        *(double *)(base + s->off) = v;
        return MD_OK;
    }
    case T_LIST: {
        free_field(cfg, s);
        char **items = (char **)(base + s->off);
        int *n = (int *)(base + s->count_off);
        const char *p = value;
        while (*p) {
            size_t l = strcspn(p, ",");
            char tmp[PATH_MAX];
            if (l >= sizeof tmp) {
                seterr(err, errlen, "setting '%s' (%s): item too long", s->name, where);
                return MD_ERR_INVALID;
            }
            memcpy(tmp, p, l);
            tmp[l] = 0;
            char *t = trim(tmp);
            if (*t) {
                if (*n >= MD_CFG_MAX_LIST) {
                    seterr(err, errlen, "setting '%s' (%s): more than %d items", s->name, where, MD_CFG_MAX_LIST);
                    return MD_ERR_INVALID;
                }
                if (!(items[*n] = strdup(t)))
                    return MD_ERR_NOMEM;
                (*n)++;
            }
            p += l + (p[l] == ',');
        }
        return MD_OK;
    }
    }
    return MD_ERR_INTERNAL;
}

static md_status read_file(md_config *cfg, const char *path, char *err, size_t errlen)
{
    md_status st = MD_OK;
    FILE *f = fopen(path, "r");
    if (!f) {
        seterr(err, errlen, "setting 'config': cannot open '%s': %s", path, strerror(errno));
        return MD_ERR_INVALID;
    }
    char line[4096];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            seterr(err, errlen, "config file %s:%d: line too long", path, lineno);
            st = MD_ERR_INVALID;
            goto out;
        }
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        char *l = trim(line);
        if (!*l)
            continue;
        char *eq = strchr(l, '=');
        if (!eq) {
            seterr(err, errlen, "config file %s:%d: expected 'name = value'", path, lineno);
            st = MD_ERR_INVALID;
            goto out;
        }
        *eq = 0;
        char *name = trim(l), *value = trim(eq + 1);
        /* Allow quoted values so that a value may hold spaces or '#'-free text as written. */
        size_t vl = strlen(value);
        if (vl >= 2 && value[0] == '"' && value[vl - 1] == '"') {
            value[vl - 1] = 0;
            value++;
        }
        const setting *s = find_setting(name, strlen(name));
        if (!s) {
            seterr(err, errlen, "config file %s:%d: unknown setting '%s'", path, lineno, name);
            st = MD_ERR_INVALID;
            goto out;
        }
        char where[PATH_MAX + 32];
        snprintf(where, sizeof where, "%s:%d", path, lineno);
        if ((st = set_value(cfg, s, value, where, err, errlen)) != MD_OK)
            goto out;
    }
out:
    fclose(f);
    return st;
}

/* ---- the rows' checks (see setting_check_fn) -------------------------------------------------- */

static md_status check_bind(md_config *cfg, char *why, size_t len)
{
    unsigned char addr[16];
    if (inet_pton(AF_INET, cfg->bind, addr) != 1 && inet_pton(AF_INET6, cfg->bind, addr) != 1) {
        snprintf(why, len, "'%s' is not an IPv4 or IPv6 address", cfg->bind);
        return MD_ERR_INVALID;
    }
    return MD_OK;
}

static md_status check_data_dir(md_config *cfg, char *why, size_t len)
{
    if (!cfg->data_dir[0]) {
        snprintf(why, len, "must not be empty");
        return MD_ERR_INVALID;
    }
    return MD_OK;
}

static md_status check_model_dir(md_config *cfg, char *why, size_t len)
{
    struct stat sb;
    if (cfg->model_dir[0] && (stat(cfg->model_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))) {
        snprintf(why, len, "'%s' is not a directory", cfg->model_dir);
        return MD_ERR_INVALID;
    }
    return MD_OK;
}

/* Roots are compared against canonical paths later, so canonicalise them now. */
static md_status check_allowed_roots(md_config *cfg, char *why, size_t len)
{
    for (int i = 0; i < cfg->n_allowed_roots; i++) {
        char *r = cfg->allowed_roots[i];
        if (r[0] != '/') {
            snprintf(why, len, "'%s' is not an absolute path", r);
            return MD_ERR_INVALID;
        }
        char *canon = realpath(r, NULL);
        struct stat sb;
        if (!canon || stat(canon, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            snprintf(why, len, "'%s' is not an existing directory", r);
            free(canon);
            return MD_ERR_INVALID;
        }
        free(r);
        cfg->allowed_roots[i] = canon;
    }
    return MD_OK;
}

static md_status check_cors_origins(md_config *cfg, char *why, size_t len)
{
    for (int i = 0; i < cfg->n_cors_origins; i++) {
        const char *o = cfg->cors_origins[i];
        if (strcmp(o, "*") != 0 && strncmp(o, "http://", 7) != 0 && strncmp(o, "https://", 8) != 0) {
            snprintf(why, len, "'%s' is not * or an http(s):// origin", o);
            return MD_ERR_INVALID;
        }
    }
    return MD_OK;
}

/* The temporal encoder commits whole segments: a window holds a whole number of them. */
static md_status check_window_frames(md_config *cfg, char *why, size_t len)
{
    if (cfg->window_frames % cfg->segment_frames != 0) {
        snprintf(why, len, "%lld is not a multiple of segment_frames (%lld)", cfg->window_frames,
                 cfg->segment_frames);
        return MD_ERR_INVALID;
    }
    return MD_OK;
}

static md_status check_temporal(md_config *cfg, char *why, size_t len)
{
    struct stat sb;
    if (cfg->temporal[0] && (stat(cfg->temporal, &sb) != 0 || !S_ISREG(sb.st_mode))) {
        snprintf(why, len, "'%s' is not a file (create one with momentd init-temporal)", cfg->temporal);
        return MD_ERR_INVALID;
    }
    return MD_OK;
}

/* Runs the rows' checks once every source is in; the first failure names its setting. */
static md_status validate(md_config *cfg, char *err, size_t errlen)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        char why[PATH_MAX + 128];
        md_status st;
        if (SETTINGS[i].check && (st = SETTINGS[i].check(cfg, why, sizeof why)) != MD_OK) {
            seterr(err, errlen, "setting '%s': %s", SETTINGS[i].name, why);
            return st;
        }
    }
    return MD_OK;
}

md_status md_config_load(md_config *cfg, int argc, char **argv, int first, char *err, size_t errlen)
{
    md_status st;
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < N_SETTINGS; i++)
        if ((st = set_value(cfg, &SETTINGS[i], SETTINGS[i].def, "default", err, errlen)) != MD_OK)
            return st;

    /* The config file comes first, so find --config before applying any flag. */
    const char *file = getenv("MOMENTD_CONFIG");
    for (int i = first; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                seterr(err, errlen, "setting 'config': --config needs a file name");
                return MD_ERR_INVALID;
            }
            file = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            file = argv[i] + 9;
        }
    }
    if (file && *file) {
        if ((st = read_file(cfg, file, err, errlen)) != MD_OK)
            return st;
        if (!(cfg->config_file = strdup(file)))
            return MD_ERR_NOMEM;
    }

    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--config") == 0) {
            i++;
            continue;
        }
        if (strncmp(a, "--config=", 9) == 0)
            continue;
        if (strncmp(a, "--", 2) != 0) {
            seterr(err, errlen, "unexpected argument '%s' (settings are given as --name value)", a);
            return MD_ERR_INVALID;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const setting *s = find_setting(name, nlen);
        if (!s) {
            seterr(err, errlen, "unknown option '%.*s' (see momentd --help)", (int)(nlen + 2), a);
            return MD_ERR_INVALID;
        }
        const char *value;
        if (eq) {
            value = eq + 1;
        } else {
            if (i + 1 >= argc) {
                seterr(err, errlen, "setting '%s': --%s needs a value", s->name, s->name);
                return MD_ERR_INVALID;
            }
            value = argv[++i];
        }
        char where[128];
        snprintf(where, sizeof where, "flag --%s", s->name);
        if ((st = set_value(cfg, s, value, where, err, errlen)) != MD_OK)
            return st;
    }

    for (size_t i = 0; i < N_SETTINGS; i++) {
        char env[96] = "MOMENTD_";
        size_t k = 8;
        for (const char *c = SETTINGS[i].name; *c && k < sizeof env - 1; c++)
            env[k++] = (char)toupper((unsigned char)*c);
        env[k] = 0;
        const char *v = getenv(env);
        if (!v)
            continue;
        char where[128];
        snprintf(where, sizeof where, "environment %s", env);
        if ((st = set_value(cfg, &SETTINGS[i], v, where, err, errlen)) != MD_OK)
            return st;
    }
    return validate(cfg, err, errlen);
}

void md_config_free(md_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < N_SETTINGS; i++)
        free_field(cfg, &SETTINGS[i]);
    free(cfg->config_file);
    cfg->config_file = NULL;
}

void md_config_print_help(void)
{
    printf("Settings (config file 'name = value', then flags --name VALUE, then environment MOMENTD_NAME;\n"
           "later sources override earlier ones):\n\n");
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const setting *s = &SETTINGS[i];
        char env[96] = "MOMENTD_";
        size_t k = 8;
        for (const char *c = s->name; *c && k < sizeof env - 1; c++)
            env[k++] = (char)toupper((unsigned char)*c);
        env[k] = 0;
        char flag[64];
        snprintf(flag, sizeof flag, "%s", s->name);
        for (char *c = flag; *c; c++)
            if (*c == '_')
                *c = '-';
        char range[80] = "";
        if (s->type == T_INT || s->type == T_SIZE)
            snprintf(range, sizeof range, "; %lld to %lld", (long long)s->min, (long long)s->max);
        else if (s->type == T_DOUBLE)
            snprintf(range, sizeof range, "; %g to %g", s->min, s->max);
        printf("  --%-20s %s\n  %-22s default: %s%s%s%s; env %s\n\n", flag, s->help, "",
               s->def[0] ? s->def : "(empty)", range, s->choices ? "; one of " : "", s->choices ? s->choices : "",
               env);
    }
}
