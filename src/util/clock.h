/*
** clock.h — a monotonic wall clock for timings (progress lines, efficiency reports).
*/
#ifndef ANETRAIN_CLOCK_H
#define ANETRAIN_CLOCK_H

/* Seconds since an arbitrary fixed point; only differences mean anything. */
double now_seconds(void);

#endif
