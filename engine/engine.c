/* engine.c - process-wide set-up behind momentd.h: FFmpeg's global state, the compute device
 * (backend.h) and the CPU math threads, so that the server never sees the video or backend
 * headers. md_library_open() asks for the same device again and gets the same backend. */
#define _XOPEN_SOURCE 700
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../video/isolate.h"
#include "../video/video.h"
#include "backend.h"
#include "momentd.h"

static md_engine_info g_info; /* written once by md_engine_init, before other threads exist */

md_status md_engine_init(const md_engine_params *p, md_engine_info *info, md_errbuf *e)
{
    const md_backend_i *be = NULL;
    char err[512];
    md_video_global_init();
    if (md_backend_select(p->device ? p->device : "auto", &be, err, sizeof err) != MD_OK)
        return md_fail(e, MD_ERR_UNAVAILABLE, "%s", err);
    if (p->gpu_mem > 0 && be->set_mem_budget)
        be->set_mem_budget((size_t)p->gpu_mem);
    /* Workers run their matrix products at the same time: split the cores between them rather
     * than letting each OpenBLAS call spread over all of them. */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int workers = p->workers > 0 ? p->workers : 1;
    int threads = p->threads > 0 ? p->threads : (int)(cores / workers > 1 ? cores / workers : 1);
    memset(&g_info, 0, sizeof g_info);
    g_info.math_threads = md_backend_cpu_set_threads(threads);
    snprintf(g_info.backend, sizeof g_info.backend, "%s", be->name);
    be->describe(g_info.device, sizeof g_info.device);
#ifdef MD_HAVE_CUDA
    g_info.cuda_built = 1;
#endif
    if (info)
        *info = g_info;
    return MD_OK;
}

void md_engine_get_info(md_engine_info *info) { *info = g_info; }

int md_engine_worker_main(int argc, char **argv) { return md_video_worker_main(argc, argv); }
