/*
 * session_int.h - what the session's files share, and nobody else sees:
 *   session.c   life cycle, I/O, TLS with the client, timers, the pump
 *   upstream.c  the MTA side: connect, failover, banner, XCLIENT/PROXY,
 *               STARTTLS toward the MTA, and its replies
 *   commands.c  client commands, policy calls, and the DATA body
 *
 * Caution: nothing below sess_pump() frees a session.  Handlers only change
 * state (sess_end() marks it closing, s->dead marks it gone) and the pump
 * frees it at the end of the event, so no handler is left holding a
 * dangling pointer.
 */
#ifndef SMTPGATE_SESSION_INT_H
#define SMTPGATE_SESSION_INT_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include "auth.h"
#include "buf.h"
#include "config.h"
#include "data.h"
#include "log.h"
#include "policy.h"
#include "session.h"
#include "smtp.h"
#include "tls.h"

#define COUT_HIGH (BUF_SIZE / 4)         /* stop producing replies past this */
#define UOUT_ROOM_MIN (SMTP_AUTH_LINE_MAX + 2) /* the longest line we forward, CRLF */
#define DATA_ROOM_MIN 1024               /* less than this free: wait for the MTA */
#define PUMP_ROUNDS_MAX 64               /* bound on one pump; watchers resume the rest */
#define SESSION_ID_LEN 16
#define REPLY_LINE_MAX 512
#define SESS_REPLY_NEED_HELO "503 5.5.1 Error: send HELO/EHLO first"
#define SESSION_ABORTS_MAX 3             /* bodies refused mid-stream before we close */

/* What the client side is doing. */
enum state {
	ST_PROXYHDR,    /* reading the load balancer's PROXY header */
	ST_TLS,         /* TLS handshake with the client (implicit, or after STARTTLS) */
	ST_PREGREET,    /* holding the banner; a client that talks first is refused */
	ST_GREETING,    /* waiting for the upstream to be ready to send the banner */
	ST_COMMAND,     /* reading commands */
	ST_AUTH,        /* relaying the client's answers to a 334 challenge */
	ST_DATA,        /* streaming a message body */
	ST_CLOSING,     /* flushing the last replies, then free */
};

/* What the upstream link is doing. */
enum up_state {
	UP_NONE,        /* no connection */
	UP_BANNER,      /* connect under way, or waiting for the 220 */
	UP_EHLO,        /* starttls on: waiting for our EHLO's reply */
	UP_STARTTLS,    /* waiting for the 220 to STARTTLS */
	UP_TLS,         /* TLS handshake with the MTA */
	UP_TLS_EHLO,    /* waiting for the reply to our EHLO under TLS */
	UP_XCLIENT,     /* waiting for the 220 that follows XCLIENT */
	UP_REPLAY,      /* after a reconnect: waiting for the replayed EHLO's reply */
	UP_READY,
};

/* What a pending reply is for. */
enum expect {
	EX_LOCAL,       /* answered by us; the text waits in s->lq */
	EX_GENERIC, EX_HELO, EX_EHLO, EX_MAIL, EX_RCPT, EX_DATA, EX_DOT, EX_AUTH, EX_QUIT, EX_RSET,
	EX_SILENT,      /* ours (an RSET after STARTTLS): the reply is not relayed */
};

struct pending {
	uint8_t expect;
	uint16_t len;                    /* EX_LOCAL: bytes of text in s->lq;
					    EX_MAIL, EX_RCPT: the transaction's txn_seq */
};

enum txn { TXN_NONE, TXN_OPEN, TXN_REFUSED };
enum abort_reason { ABORT_NONE, ABORT_SIZE, ABORT_BARE };

struct session {
	struct ev_loop *loop;
	struct config *cfg;
	const struct config_listen *lis;
	char id[SESSION_ID_LEN + 1];
	enum state state;
	enum up_state up;
	unsigned server;                 /* index into the upstream's servers */
	unsigned up_gen;                 /* bumped whenever the upstream is closed */

	int cfd, ufd;
	ev_io crd, cwr, urd, uwr;
	ev_timer ctimer;                 /* client idle, pregreet, handshake, close linger */
	ev_timer utimer;                 /* upstream connect, banner, replies */
	struct buf cin, cout, uin, uout, lq;

	struct ssl_st *cssl, *ussl;      /* NULL: plaintext */
	uint8_t c_rwant, c_wwant;        /* what a blocked SSL read/write waits for */
	uint8_t u_rwant, u_wwant;
	bool tls;                        /* the client's side is encrypted */
	bool starttls_pending;           /* "220 Ready" queued: handshake once it is out */
	bool need_helo;                  /* after STARTTLS: no MAIL or AUTH before a new EHLO */
	char *up_banner;                 /* the MTA's 220, kept across STARTTLS toward it */

	struct smtp_lineparser lp;
	struct smtp_replyparser rp;
	struct data_state ds;

	struct pending q[SESSION_PENDING_MAX];
	unsigned qhead, qlen;
	unsigned q_upstream;             /* entries the MTA still has to answer */
	bool barrier;                    /* HELO/EHLO/DATA/AUTH/QUIT/STARTTLS outstanding:
					    read no further */
	bool up_pipelining;
	bool replay;                     /* reconnecting after an aborted message */
	bool up_tls_failed;              /* a server failed TLS: say so if none is left */
	bool dead;                       /* free at the end of this pump */
	bool client_eof;                 /* the client sent its last byte */

	struct sockaddr_storage peer, local;
	socklen_t peerlen, locallen;
	char ip[INET6_ADDRSTRLEN];
	char *helo;                      /* the last greeting the MTA took */
	bool helo_ehlo;
	char *helo_pending;              /* sent, its reply not in yet */
	char *user;                      /* set when the MTA said 235 */
	struct auth_state *auth;         /* during an AUTH exchange only */
	char *sender;
	enum txn txn;
	uint16_t txn_seq;                /* bumped per transaction, to match late replies */
	unsigned mails_unanswered;       /* MAILs relayed, their replies not in yet */
	unsigned rcpts, rcpts_refused;
	/* The message whose final dot awaits the MTA's reply: the transaction
	 * itself ended at the dot, and what is pipelined behind it is judged
	 * as a new one. */
	char *msg_sender;
	unsigned msg_rcpts;
	uint64_t msg_size;
	enum abort_reason abort;
	unsigned aborts;                 /* bodies refused mid-stream so far */

	double started;
	unsigned messages, refused;
	struct session *prev, *next;
};

#define F(k, v) { (k), (v), (size_t)-1, 0 }
#define FN(k, v, n) { (k), (v), (n), 0 }
#define FNUM(k, v) { (k), (v), (size_t)-1, 1 }
#define FEND { NULL, NULL, 0, 0 }

/* session.c */
void sess_pump(struct session *s);
void sess_set_state(struct session *s, enum state st);
void sess_fill_facts(struct session *s, struct policy_facts *f);
struct pending *sess_q_head(struct session *s);
void sess_q_pop(struct session *s);
void sess_q_drop_all(struct session *s);
void sess_q_push(struct session *s, enum expect ex, size_t len);
void sess_client_out(struct session *s, const char *p, size_t n);
void sess_flush_local(struct session *s);
void sess_reply_local(struct session *s, const char *text);
void sess_upstream_out(struct session *s, const char *p, size_t n);
void sess_end(struct session *s, const char *reply);
void sess_client_timer_again(struct session *s);
void sess_upstream_timer_again(struct session *s, uint64_t ms);
void sess_upstream_tls_failed(struct session *s, const char *why);
/* An IPv4-mapped IPv6 address (::ffff:a.b.c.d) becomes the IPv4 one. */
void sess_fold_mapped(struct sockaddr_storage *ss, socklen_t *len);
unsigned sess_addr_port(const struct sockaddr *sa);
int sess_set_nonblock_nodelay(int fd);
void sess_txn_reset(struct session *s);
void sess_refuse(struct session *s, enum policy_stage stage, const struct verdict *v,
    const char *rcpt, size_t rcptlen);

/* upstream.c */
void sess_upstream_close(struct session *s);
void sess_upstream_failed(struct session *s, const char *why);
void sess_upstream_error(struct session *s);
void sess_upstream_try(struct session *s);
void sess_upstream_connected(struct session *s);
void sess_upstream_tls_step(struct session *s);
bool sess_process_upstream(struct session *s);

/* commands.c */
bool sess_process_commands(struct session *s);
bool sess_process_data(struct session *s);

#endif
