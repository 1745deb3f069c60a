/* limits.c - the one check of every request and setting bound defined in momentd.h ("Limits").
 *
 * The engine calls these at the top of md_library_search, md_library_ground and md_library_open;
 * the server calls the same functions so that a bad request is a 400 naming the field before any
 * work starts. Messages name the field as the API and the settings spell it, with its range.
 */
#include <math.h>
#include <string.h>

#include "../video/video.h"
#include "momentd.h"
#include "temporal.h"

/* The product ranges must lie inside what the layers below accept, or a setting that passes here
 * would fail later, in the middle of a job. C11 has no floating constant expressions, so the fps
 * bounds are compared where a compiler must fold them anyway: md_library_params_check's first
 * line (and test_core.c). */
_Static_assert(MD_WINDOW_FRAMES_MIN >= 1 && MD_WINDOW_FRAMES_MAX <= MD_TEMPORAL_WINDOW_MAX,
               "window_frames' range must lie inside what the temporal encoder accepts");
_Static_assert(MD_SEGMENT_FRAMES_MIN >= 1 && MD_SEGMENT_FRAMES_MAX <= MD_WINDOW_FRAMES_MAX,
               "a segment must fit in a window");

/* "The query is empty" for text that is only white space: CLIP would encode the start and end
 * tokens alone, which matches nothing in particular. */
static md_status check_text(const char *text, md_errbuf *e)
{
    const char *p = text;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    if (!*p)
        return md_fail(e, MD_ERR_INVALID, "the query is empty");
    size_t n = strlen(text);
    if (n > MD_MAX_QUERY_BYTES)
        return md_fail(e, MD_ERR_INVALID, "the query is %zu bytes long; the limit is %d", n, MD_MAX_QUERY_BYTES);
    return MD_OK;
}

md_status md_search_query_check(const md_search_query *q, md_errbuf *e)
{
    if (q->k < MD_SEARCH_K_MIN || q->k > MD_SEARCH_K_MAX)
        return md_fail(e, MD_ERR_INVALID, "'k' must be %d..%d", MD_SEARCH_K_MIN, MD_SEARCH_K_MAX);
    if (q->offset < 0 || q->offset > MD_SEARCH_OFFSET_MAX)
        return md_fail(e, MD_ERR_INVALID, "'offset' must be 0..%d", MD_SEARCH_OFFSET_MAX);
    /* Written as "not inside" so that NaN fails too. */
    if (!(q->min_score >= MD_SEARCH_MIN_SCORE_MIN && q->min_score <= MD_SEARCH_MIN_SCORE_MAX))
        return md_fail(e, MD_ERR_INVALID, "'min_score' must be %g..%g (-1: no floor)", MD_SEARCH_MIN_SCORE_MIN,
                       MD_SEARCH_MIN_SCORE_MAX);
    if (q->video_id < 0 || q->video_id > MD_ID_MAX)
        return md_fail(e, MD_ERR_INVALID, "'video_id' must be a video id, 1..%lld", MD_ID_MAX);
    if (!(q->t_s >= 0 && q->t_s <= MD_SEARCH_T_MAX))
        return md_fail(e, MD_ERR_INVALID, "'t' must be a time in seconds, 0..%.0f", MD_SEARCH_T_MAX);
    if (q->n_videos < 0 || q->n_videos > MD_SEARCH_MAX_VIDEOS)
        return md_fail(e, MD_ERR_INVALID, "'video_ids' holds more than %d ids", MD_SEARCH_MAX_VIDEOS);
    if (q->n_videos > 0 && !q->videos)
        return md_fail(e, MD_ERR_INVALID, "'video_ids': %d ids announced, none given", q->n_videos);
    for (int i = 0; i < q->n_videos; i++)
        if (q->videos[i] < 1 || q->videos[i] > MD_ID_MAX)
            return md_fail(e, MD_ERR_INVALID, "'video_ids' must hold video ids, 1..%lld", MD_ID_MAX);
    int given = (q->text != NULL) + (q->image_path != NULL) + (q->video_id > 0);
    if (given == 0)
        return md_fail(e, MD_ERR_INVALID, "give a query: q=TEXT, a picture (multipart 'file'), or video_id and t");
    if (given > 1)
        return md_fail(e, MD_ERR_INVALID, "give exactly one query: text (q), an image, or video_id with t");
    return q->text ? check_text(q->text, e) : MD_OK;
}

md_status md_ground_check(const char *text, int top_n, md_errbuf *e)
{
    if (top_n < MD_GROUND_TOP_N_MIN || top_n > MD_GROUND_TOP_N_MAX)
        return md_fail(e, MD_ERR_INVALID, "'top_n' must be %d..%d", MD_GROUND_TOP_N_MIN, MD_GROUND_TOP_N_MAX);
    if (!text)
        return md_fail(e, MD_ERR_INVALID, "give the query text as q");
    return check_text(text, e);
}

md_status md_library_params_check(const md_library_params *p, md_errbuf *e)
{
    /* A bug in the constants above, not a bad setting (see the static asserts). */
    if (!(MD_SAMPLE_FPS_MIN > 0 && MD_SAMPLE_FPS_MIN <= MD_SAMPLE_FPS_MAX && MD_SAMPLE_FPS_MAX <= MD_VIDEO_FPS_MAX))
        return md_fail(e, MD_ERR_INTERNAL, "sample_fps's range [%g, %g] is not inside the decoder's (0, %d]",
                       MD_SAMPLE_FPS_MIN, MD_SAMPLE_FPS_MAX, MD_VIDEO_FPS_MAX);
    if (!p->data_dir || !p->data_dir[0])
        return md_fail(e, MD_ERR_INVALID, "'data_dir' must not be empty");
    if (p->workers < MD_WORKERS_MIN || p->workers > MD_WORKERS_MAX)
        return md_fail(e, MD_ERR_INVALID, "'workers' must be %d..%d, not %d", MD_WORKERS_MIN, MD_WORKERS_MAX,
                       p->workers);
    if (p->max_upload < MD_MAX_UPLOAD_MIN || p->max_upload > MD_MAX_UPLOAD_MAX)
        return md_fail(e, MD_ERR_INVALID, "'max_upload' must be %lld..%lld bytes, not %lld", MD_MAX_UPLOAD_MIN,
                       MD_MAX_UPLOAD_MAX, p->max_upload);
    if (p->n_allowed_roots < 0 || (p->n_allowed_roots > 0 && !p->allowed_roots))
        return md_fail(e, MD_ERR_INVALID, "'allowed_roots': %d roots announced, none given", p->n_allowed_roots);
    for (int i = 0; i < p->n_allowed_roots; i++)
        if (!p->allowed_roots[i] || p->allowed_roots[i][0] != '/')
            return md_fail(e, MD_ERR_INVALID, "'allowed_roots' must hold absolute paths (item %d does not)", i);
    if (p->job_retries < 0 || p->job_retries > MD_JOB_RETRIES_MAX)
        return md_fail(e, MD_ERR_INVALID, "'job_retries' must be 0..%d, not %d", MD_JOB_RETRIES_MAX, p->job_retries);
    if (p->debug_job_delay_ms < 0 || p->debug_job_delay_ms > MD_DEBUG_JOB_DELAY_MS_MAX)
        return md_fail(e, MD_ERR_INVALID, "'debug_job_delay_ms' must be 0..%d, not %d", MD_DEBUG_JOB_DELAY_MS_MAX,
                       p->debug_job_delay_ms);
    if (!(p->sample_fps >= MD_SAMPLE_FPS_MIN && p->sample_fps <= MD_SAMPLE_FPS_MAX))
        return md_fail(e, MD_ERR_INVALID, "'sample_fps' must be %g..%g, not %g", MD_SAMPLE_FPS_MIN,
                       MD_SAMPLE_FPS_MAX, p->sample_fps);
    if (p->keyframes_only != 0 && p->keyframes_only != 1)
        return md_fail(e, MD_ERR_INVALID, "'keyframes_only' must be 0 or 1, not %d", p->keyframes_only);
    for (int c = 0; c < 3; c++)
        if (!isfinite(p->mean[c]) || !isfinite(p->std[c]) || !(p->std[c] > 0))
            return md_fail(e, MD_ERR_INVALID, "'mean'/'std': channel %d must have a finite mean and a std > 0", c);
    if (p->segment_frames < MD_SEGMENT_FRAMES_MIN || p->segment_frames > MD_SEGMENT_FRAMES_MAX)
        return md_fail(e, MD_ERR_INVALID, "'segment_frames' must be %d..%d, not %d", MD_SEGMENT_FRAMES_MIN,
                       MD_SEGMENT_FRAMES_MAX, p->segment_frames);
    if (p->window_frames < MD_WINDOW_FRAMES_MIN || p->window_frames > MD_WINDOW_FRAMES_MAX)
        return md_fail(e, MD_ERR_INVALID, "'window_frames' must be %d..%d, not %d", MD_WINDOW_FRAMES_MIN,
                       MD_WINDOW_FRAMES_MAX, p->window_frames);
    if (p->window_frames % p->segment_frames != 0)
        return md_fail(e, MD_ERR_INVALID, "'window_frames' (%d) must be a multiple of 'segment_frames' (%d)",
                       p->window_frames, p->segment_frames);
    return MD_OK;
}
