/*
 * clock.h - the one clock policies read, so tests can set the time.
 */
#ifndef SMTPGATE_CLOCK_H
#define SMTPGATE_CLOCK_H

#include <stdint.h>

/* Milliseconds on a monotonic clock, or the time set by clock_set_ms(). */
uint64_t clock_now_ms(void);
/* Freeze the clock at ms (tests); clock_set_ms(0) returns to real time. */
void clock_set_ms(uint64_t ms);

#endif
