/*
 * server.h - the daemon around the sessions: listeners, signals, reload,
 * graceful shutdown.
 */
#ifndef SMTPGATE_SERVER_H
#define SMTPGATE_SERVER_H

#include "config.h"

#define SERVER_ACCEPTS_PER_EVENT 64   /* fairness between listeners and sessions */
#define SERVER_LISTEN_BACKLOG 4096
#define SERVER_ACCEPT_PAUSE_S 0.5     /* listeners rest this long when out of fds */
#define SERVER_FINAL_FLUSH_S 2.0      /* after the grace: time for the last 421s */

/* Hold SIGHUP, SIGUSR1, SIGTERM and SIGINT pending until server_run() handles them. */
void server_block_signals(void);
/* Bind, drop privileges, run until SIGTERM/SIGINT; returns the exit code.
 * Takes over the reference to cfg. */
int server_run(struct config *cfg);

#endif
