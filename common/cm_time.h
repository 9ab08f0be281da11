/*
 * Clocks. Everything that depends on time takes it as an argument (the rate
 * limiter, sale windows) so that unit tests can drive it; the process-wide
 * clock can be replaced by a fake one in tests (cm_time_set_fake).
 */
#ifndef CM_TIME_H
#define CM_TIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Monotonic clock in nanoseconds, microseconds and milliseconds. Thread-safe. */
uint64_t cm_mono_ns(void);
uint64_t cm_mono_us(void);
uint64_t cm_mono_ms(void);
/* Wall clock, milliseconds since the Unix epoch. Thread-safe. */
int64_t cm_wall_ms(void);

/*
 * Test seam: when enabled, cm_mono_ns() returns fake_mono_ns and cm_wall_ms()
 * returns fake_wall_ms. Single-threaded test setup only.
 */
void cm_time_set_fake(bool on, uint64_t fake_mono_ns, int64_t fake_wall_ms);
void cm_time_advance_fake(uint64_t ns);

/*
 * Fault-injection seam for tests (the clock stepped backwards or forwards):
 * cm_wall_ms() adds offset_ms to the real wall clock; the monotonic clock is
 * untouched, as with a real step of CLOCK_REALTIME. Starts at 0; flashgate
 * sets it from debug.wall_offset_ms at start and from the admin API (PUT
 * /admin/v1/debug/clock), both only with the debug routes on. Thread-safe.
 */
void cm_time_set_wall_offset(int64_t offset_ms);
int64_t cm_time_wall_offset(void);

/*
 * RFC 3339 / ISO 8601 timestamps ("2026-11-22T10:00:00Z", with optional
 * fraction and numeric offset). Returns 0 and sets *out_ms, or CM_EINVAL.
 */
int cm_time_parse_rfc3339(const char *s, int64_t *out_ms);
/* Formats ms since the epoch as "2026-11-22T10:00:00.123Z" into buf (>= 32 bytes). */
size_t cm_time_format_rfc3339(int64_t ms, char *buf, size_t len);

#endif
