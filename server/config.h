/* config.h - momentd's settings: one table, three sources.
 *
 * Every setting is a row {name, type, default, min, max, help, check} in config.c; the ranges of
 * the settings the engine takes are its constants (engine/momentd.h, "Limits").
 * Sources are applied in this order, later ones overriding earlier ones:
 *   1. the config file (--config FILE or MOMENTD_CONFIG), lines "name = value", '#' comments;
 *   2. command-line flags: --name value or --name=value (underscores may be written as dashes);
 *   3. the environment: MOMENTD_<NAME> (upper case), e.g. MOMENTD_PORT=9000.
 * Values are validated after all sources are read; a bad value is an error that
 * names the setting and where it came from. Not thread-safe while parsing;
 * read-only afterwards.
 */
#ifndef MD_CONFIG_H
#define MD_CONFIG_H

#include <stddef.h>

#include "../engine/momentd.h" /* md_status */

#define MD_CFG_MAX_LIST 16

typedef struct md_config {
    char *bind;
    long long port;
    char *data_dir;
    char *model_dir;
    long long max_upload; /* bytes */
    long long workers;
    long long http_threads;
    char *allowed_roots[MD_CFG_MAX_LIST]; /* canonical absolute paths after validation */
    int n_allowed_roots;
    char *api_key;
    char *cors_origins[MD_CFG_MAX_LIST];
    int n_cors_origins;
    char *log_level;
    char *device;
    long long gpu_mem; /* bytes the CUDA backend may allocate; 0: no cap but the device's */
    long long job_retries;
    long long threads;
    long long keyframes_only;
    long long decode_in_process;  /* 1: no worker processes (debugging) */
    long long decode_mem_limit;   /* bytes of address space per decode worker; 0: none */
    long long allow_nested_media; /* 1: archive files may open other local files */
    double sample_fps;     /* frames sampled per second of video */
    long long segment_frames;
    long long window_frames;
    char *temporal;        /* temporal.safetensors path ("" = default) */
    long long debug_job_delay_ms; /* test hook: slows each job step; 0 in production */
    char *config_file; /* the file that was read, or NULL */
} md_config;

/* Fills CFG with defaults, then the file, flags (argv[first..argc-1]) and the
 * environment. On error writes a message naming the setting into ERR and
 * returns MD_ERR_INVALID. Unknown flags are errors. md_config_free() releases
 * everything, also after a failure. */
md_status md_config_load(md_config *cfg, int argc, char **argv, int first, char *err, size_t errlen);
void md_config_free(md_config *cfg);

/* Prints the settings table (name, default, env var, help) for --help. */
void md_config_print_help(void);

#endif
