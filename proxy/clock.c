/*
 * clock.c - monotonic milliseconds, settable for tests.
 */
#include "clock.h"

#include <time.h>

static uint64_t fixed_ms;

uint64_t clock_now_ms(void)
{
	struct timespec ts;

	if (fixed_ms)
		return fixed_ms;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void clock_set_ms(uint64_t ms)
{
	fixed_ms = ms;
}
