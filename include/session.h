/*
 * session.h - one client connection and its upstream: the SMTP state
 * machine of SPEC §3.  Callers see only an opaque struct.
 */
#ifndef SMTPGATE_SESSION_H
#define SMTPGATE_SESSION_H

#include <ev.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "config.h"

#define SESSION_PENDING_MAX 64       /* commands awaiting replies; past it we stop reading */
#define SESSION_HELO_MAX 255         /* a domain or address literal */
#define SESSION_CLOSE_LINGER_MS 5000 /* time to flush the last reply before closing */

struct session;

/*
 * Take over an accepted, non-blocking socket.  The session holds a
 * reference to cfg for its whole life (it finishes under the config it
 * began with, across reloads).  It frees itself when it ends.
 */
void session_start(struct ev_loop *loop, int fd, const struct sockaddr *peer,
    socklen_t peerlen, struct config *cfg, const struct config_listen *lis);

/* Sessions alive now. */
unsigned session_count(void);
/*
 * At the end of the shutdown grace: say 421 to every session and close it
 * once the reply is out; with force, free every session now.
 */
void session_close_all(bool force);

#endif
