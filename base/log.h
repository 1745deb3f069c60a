/* log.h - one-line log records on stderr: "2026-11-26T08:00:00.123Z INFO  msg".
 *
 * Thread-safe (one fprintf per record, stderr unbuffered). The level is global
 * and set once at start-up.
 */
#ifndef MD_LOG_H
#define MD_LOG_H

typedef enum md_log_level { MD_LOG_DEBUG, MD_LOG_INFO, MD_LOG_WARN, MD_LOG_ERROR } md_log_level;

void md_log_set_level(md_log_level lvl);
void md_log(md_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define md_debug(...) md_log(MD_LOG_DEBUG, __VA_ARGS__)
#define md_info(...) md_log(MD_LOG_INFO, __VA_ARGS__)
#define md_warn(...) md_log(MD_LOG_WARN, __VA_ARGS__)
#define md_error(...) md_log(MD_LOG_ERROR, __VA_ARGS__)

/* Milliseconds since the Unix epoch (wall clock) and a monotonic clock. */
long long md_now_ms(void);
double md_mono_s(void);

#endif
