/* main.c - the momentd binary: subcommands, start-up order and clean shutdown.
 *
 *   momentd [serve] [--name value ...]   run the daemon (default)
 *   momentd version                      print the version and build
 *   momentd --help                       usage and the settings table
 *
 * Start-up: settings (exit 2 naming the bad one) -> HTTP listening (health
 * answers 503 "starting") -> database open, migrations, crash recovery ->
 * workers -> health 200. SIGTERM/SIGINT: stop accepting, let running jobs
 * checkpoint back into the queue, close the database.
 */
#define _XOPEN_SOURCE 700
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server.h"

#ifdef MD_HAVE_CUDA
#define MD_BUILD "CPU + CUDA"
#else
#define MD_BUILD "CPU only"
#endif

static void usage(void)
{
    printf("momentd %s - makes long videos searchable by text\n\n"
           "Usage:\n"
           "  momentd [serve] [--config FILE] [--name value ...]   run the daemon (default)\n"
           "  momentd version                                      print version and build\n"
           "  momentd embed-text --model DIR TEXT                  token ids and text embedding as JSON\n"
           "  momentd embed-image --model DIR FILE                 image embedding of a picture or video frame\n"
           "  momentd init-temporal [--d-model N] [--layers N] FILE  write a fresh (identity) temporal encoder\n"
           "  momentd --help                                       this text\n\n",
           MD_VERSION);
    md_config_print_help();
}

static md_log_level parse_level(const char *s)
{
    if (strcmp(s, "debug") == 0)
        return MD_LOG_DEBUG;
    if (strcmp(s, "warn") == 0)
        return MD_LOG_WARN;
    if (strcmp(s, "error") == 0)
        return MD_LOG_ERROR;
    return MD_LOG_INFO;
}

static int serve(int argc, char **argv, int first)
{
    md_config cfg;
    md_server srv = {0};
    md_errbuf e = {{0}};
    char err[1024];
    int rc = 1;
    sigset_t sigs;
    md_dir_lock *lock = NULL;

    if (md_config_load(&cfg, argc, argv, first, err, sizeof err) != MD_OK) {
        fprintf(stderr, "momentd: %s\n", err);
        md_config_free(&cfg);
        return 2;
    }
    md_log_set_level(parse_level(cfg.log_level));
    srv.cfg = &cfg;
    srv.started_mono = md_mono_s();
    atomic_store(&srv.state, 0);

    /* Block the stop signals in every thread (threads inherit the mask), so
     * that only the sigwait() below receives them. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    md_engine_params ep = {.device = cfg.device, .gpu_mem = cfg.gpu_mem, .threads = (int)cfg.threads,
                           .workers = (int)cfg.workers};
    md_engine_info info;
    if (md_engine_init(&ep, &info, &e) != MD_OK) {
        fprintf(stderr, "momentd: %s\n", e.msg);
        rc = 2;
        goto out;
    }
    md_info("momentd %s (%s) starting: data_dir %s, backend %s, %lld workers x %d math threads%s", MD_VERSION,
            MD_BUILD, cfg.data_dir, info.backend, cfg.workers, info.math_threads,
            cfg.config_file ? ", config file read" : "");
    /* The data directory's lock before the port: a second momentd with the same settings is told
     * that the directory is taken (exit 2), not that the port is. */
    if (md_data_dir_lock(cfg.data_dir, &lock, &e) != MD_OK) {
        fprintf(stderr, "momentd: %s\n", e.msg);
        rc = 2;
        goto out;
    }
    if (md_server_start(&srv, &e) != MD_OK) {
        fprintf(stderr, "momentd: %s\n", e.msg);
        goto out;
    }
    md_info("listening on http://%s%s%s:%u", strchr(cfg.bind, ':') ? "[" : "", cfg.bind,
            strchr(cfg.bind, ':') ? "]" : "", srv.port);

    md_library_params p = md_library_default_params();
    p.data_dir = cfg.data_dir;
    p.workers = (int)cfg.workers;
    p.max_upload = cfg.max_upload;
    p.allowed_roots = (const char *const *)cfg.allowed_roots;
    p.n_allowed_roots = cfg.n_allowed_roots;
    p.job_retries = (int)cfg.job_retries;
    p.debug_job_delay_ms = (int)cfg.debug_job_delay_ms;
    p.model_dir = cfg.model_dir;
    p.sample_fps = cfg.sample_fps;
    p.keyframes_only = (int)cfg.keyframes_only;
    p.decode_in_process = (int)cfg.decode_in_process;
    p.decode_mem_limit = cfg.decode_mem_limit > 0 ? cfg.decode_mem_limit : -1; /* 0 in the settings: none */
    p.allow_nested_media = (int)cfg.allow_nested_media;
    p.segment_frames = (int)cfg.segment_frames;
    p.window_frames = (int)cfg.window_frames;
    p.temporal_path = cfg.temporal;
    p.device = cfg.device;
    p.lock = lock;
    md_status st = md_library_open(&p, &srv.lib, &e);
    if (st != MD_OK) {
        fprintf(stderr, "momentd: %s\n", e.msg);
        /* A database newer than this binary: the set-up is wrong, as with a bad setting. */
        if (st == MD_ERR_CONFLICT)
            rc = 2;
        goto out;
    }
    if (md_library_start(srv.lib, &e) != MD_OK) {
        fprintf(stderr, "momentd: %s\n", e.msg);
        goto out;
    }
    atomic_store(&srv.state, 1);
    md_info("ready");

    int sig = 0;
    sigwait(&sigs, &sig);
    md_info("received %s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
    rc = 0;
out:
    atomic_store(&srv.state, 2);
    md_server_stop(&srv);
    md_library_close(srv.lib);
    md_data_dir_unlock(lock);
    if (rc == 0)
        md_info("stopped cleanly");
    md_config_free(&cfg);
    return rc;
}

int md_cli_main(int argc, char **argv); /* cli/embed.c: embed-text, embed-image; -1 for other commands */
int md_cli_init_temporal(int argc, char **argv); /* cli/temporal.c */

int main(int argc, char **argv)
{
    /* This binary is also the sandboxed decode worker the library starts (video/isolate.h):
     * before anything else, so a worker touches nothing of the daemon's start-up. */
    int worker_rc = md_engine_worker_main(argc, argv);
    if (worker_rc >= 0)
        return worker_rc;
    const char *cmd = argc > 1 ? argv[1] : "serve";
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage();
        return 0;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("momentd %s (%s)\n", MD_VERSION, MD_BUILD);
        return 0;
    }
    if (strcmp(cmd, "init-temporal") == 0)
        return md_cli_init_temporal(argc, argv);
    int cli_rc = md_cli_main(argc, argv);
    if (cli_rc >= 0)
        return cli_rc;
    if (strcmp(cmd, "serve") == 0)
        return serve(argc, argv, argc > 1 ? 2 : 1);
    if (cmd[0] == '-') {
        for (int i = 1; i < argc; i++)
            if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
                usage();
                return 0;
            }
        return serve(argc, argv, 1);
    }
    fprintf(stderr, "momentd: unknown command '%s' (see momentd --help)\n", cmd);
    return 2;
}
