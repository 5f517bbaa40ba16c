/*
 * server.c - listeners, signals, reload and shutdown.
 *
 * The current config is the only mutable global besides the loop: SIGHUP
 * builds a whole new config and swaps the pointer only if it loaded
 * cleanly; sessions keep the config they began with.
 */
#include "server.h"

#include <errno.h>
#include <ev.h>
#include <grp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "metrics.h"
#include "session.h"

struct listener {
	ev_io io;
	int fd;
	struct config_addr addr;
	const struct config_listen *lis;   /* in the current config */
	struct listener *next;
};

static struct ev_loop *loop;
static struct config *current;
static struct listener *listeners;
static ev_signal sig_hup, sig_term, sig_int, sig_usr1;
static ev_timer grace_timer, drain_check;
static ev_prepare log_prepare;
static bool draining;
static bool started_as_root;   /* only then does `user` mean anything */

static ev_timer accept_pause;

static void listeners_watch(struct ev_loop *l, bool on)
{
	for (struct listener *ls = listeners; ls; ls = ls->next) {
		if (on)
			ev_io_start(l, &ls->io);
		else
			ev_io_stop(l, &ls->io);
	}
}

static void on_accept_pause(struct ev_loop *l, ev_timer *w, int revents)
{
	(void)w; (void)revents;
	if (!draining)
		listeners_watch(l, true);
}

static void on_accept(struct ev_loop *l, ev_io *w, int revents)
{
	struct listener *ls = (struct listener *)w;
	(void)revents;

	for (int i = 0; i < SERVER_ACCEPTS_PER_EVENT; i++) {
		struct sockaddr_storage peer;
		socklen_t len = sizeof peer;
		int fd = accept4(ls->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				/* Out of descriptors or memory: the connection stays
				 * in the backlog and readiness would fire at once
				 * again, so the listeners rest, with one log line. */
				log_msg("accept_error", "%s: %s; not accepting for %gs", ls->addr.text,
				    strerror(errno), SERVER_ACCEPT_PAUSE_S);
				listeners_watch(l, false);
				ev_timer_set(&accept_pause, SERVER_ACCEPT_PAUSE_S, 0.0);
				ev_timer_start(l, &accept_pause);
			}
			return;
		}
		session_start(l, fd, (struct sockaddr *)&peer, len, current, ls->lis);
	}
}

static int listener_open(const struct config_addr *a)
{
	int one = 1;
	int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
		goto fail;
	/* Accepted sockets inherit it: replies never wait for delayed ACKs. */
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
		goto fail;
	/* [::]:25 and 0.0.0.0:25 may both be configured: keep them apart. */
	if (a->ss.ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0)
		goto fail;
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0)
		goto fail;
	if (listen(fd, SERVER_LISTEN_BACKLOG) < 0)
		goto fail;
	return fd;
fail:;
	int e = errno;
	close(fd);
	errno = e;
	return -1;
}

static bool same_addr(const struct config_addr *a, const struct config_addr *b)
{
	return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

static struct listener *find_listener(const struct config_addr *a)
{
	for (struct listener *ls = listeners; ls; ls = ls->next)
		if (same_addr(&ls->addr, a))
			return ls;
	return NULL;
}

/*
 * Make the open listeners match cfg: keep, open or close.  All or nothing:
 * the new addresses are bound first, and if one fails (each failure logged
 * as FILE:LINE) nothing changes and -1 is returned.
 */
static int listeners_sync(struct config *cfg)
{
	struct listener **pp, *ls, *fresh = NULL;
	int rc = 0;

	for (size_t i = 0; i < cfg->nlistens; i++) {
		const struct config_listen *cl = &cfg->listens[i];
		if (find_listener(&cl->addr))
			continue;
		int fd = listener_open(&cl->addr);
		if (fd < 0 || !(ls = calloc(1, sizeof *ls))) {
			log_msg("listen_error", "%s: listen %s: %s", cl->where, cl->addr.text,
			    fd < 0 ? strerror(errno) : "out of memory");
			if (fd >= 0)
				close(fd);
			rc = -1;
			continue;
		}
		ls->fd = fd;
		ls->addr = cl->addr;
		ls->lis = cl;
		ls->next = fresh;
		fresh = ls;
	}
	if (rc < 0) {
		while ((ls = fresh)) {
			fresh = ls->next;
			close(ls->fd);
			free(ls);
		}
		return -1;
	}

	for (ls = listeners; ls; ls = ls->next)
		ls->lis = NULL;
	for (size_t i = 0; i < cfg->nlistens; i++)
		if ((ls = find_listener(&cfg->listens[i].addr)))
			ls->lis = &cfg->listens[i];
	for (pp = &listeners; (ls = *pp);) {
		if (ls->lis) {
			pp = &ls->next;
			continue;
		}
		ev_io_stop(loop, &ls->io);
		close(ls->fd);
		*pp = ls->next;
		free(ls);
	}
	while ((ls = fresh)) {
		fresh = ls->next;
		ev_io_init(&ls->io, on_accept, ls->fd, EV_READ);
		if (!ev_is_active(&accept_pause))
			ev_io_start(loop, &ls->io);
		ls->next = listeners;
		listeners = ls;
		log_msg("listen", "%s", ls->addr.text);
	}
	return 0;
}

static void listeners_close(void)
{
	while (listeners) {
		struct listener *ls = listeners;
		listeners = ls->next;
		ev_io_stop(loop, &ls->io);
		close(ls->fd);
		free(ls);
	}
}

static bool log_changed(const struct config *cfg, const struct config *old)
{
	return cfg->log_target != old->log_target || cfg->log_format != old->log_format ||
	    (cfg->log_file && (!old->log_file || strcmp(cfg->log_file, old->log_file)));
}

static bool user_changed(const struct config *cfg, const struct config *old)
{
	if (!cfg->user || !old->user)
		return cfg->user != old->user;
	return strcmp(cfg->user, old->user) != 0;
}

static void reload_failed(void)
{
	log_msg("reload", "failed; keeping the running configuration");
	metrics_inc(METRIC_CONFIG_RELOADS_TOTAL, "result", "failed", NULL);
}

/*
 * SIGHUP.  Everything that can fail is prepared first (config, metrics
 * socket, log file, listeners); only when all of it worked is the new
 * config put in place, so a reload is applied whole or not at all.
 */
static void on_hup(struct ev_loop *l, ev_signal *w, int revents)
{
	char *errs = NULL;
	size_t errlen = 0;
	FILE *mem = open_memstream(&errs, &errlen);
	(void)l; (void)w; (void)revents;

	if (draining) {
		if (mem)
			fclose(mem);
		free(errs);
		log_msg("reload", "ignored: shutting down");
		return;
	}
	struct config *cfg = config_load(current->file, mem ? mem : stderr);
	if (mem)
		fclose(mem);
	if (!cfg) {
		/* Each error as its own line; the old config keeps running. */
		for (char *line = errs, *nl; line && *line; line = nl + 1) {
			nl = strchr(line, '\n');
			if (!nl)
				nl = line + strlen(line) - 1;
			else
				*nl = '\0';
			log_msg("reload_error", "%s", line);
		}
		free(errs);
		reload_failed();
		return;
	}
	free(errs);

	struct config *old = current;
	int mfd = -1;
	FILE *lfp = NULL;
	bool relog = log_changed(cfg, old);

	if (cfg->has_metrics && !(old->has_metrics && same_addr(&old->metrics, &cfg->metrics)) &&
	    (mfd = metrics_bind(&cfg->metrics)) < 0) {
		log_msg("reload_error", "%s: metrics %s: %s", cfg->metrics_where, cfg->metrics.text,
		    strerror(errno));
		goto fail;
	}
	if (relog && cfg->log_target == LOG_TARGET_FILE && !(lfp = log_file_open(cfg->log_file))) {
		log_msg("reload_error", "%s: log %s: %s", cfg->log_where, cfg->log_file, strerror(errno));
		goto fail;
	}
	if (listeners_sync(cfg) < 0)
		goto fail;

	current = cfg;
	if (!cfg->has_metrics)
		metrics_close();
	else if (mfd >= 0) {
		metrics_adopt(loop, mfd, session_count);
		log_msg("listen", "metrics %s", cfg->metrics.text);
	}
	if (relog && log_use(cfg->log_target, lfp, cfg->log_file, cfg->log_format) < 0)
		log_msg("log_error", "%s: log: out of memory; keeping the previous log", cfg->log_where);
	if (user_changed(cfg, old) && started_as_root)
		log_msg("reload_warning", "%s: user %s takes effect at the next start, not on reload",
		    cfg->user ? cfg->user_where : cfg->file, cfg->user ? cfg->user : "(none)");
	config_unref(old);
	log_msg("reload", "ok");
	metrics_inc(METRIC_CONFIG_RELOADS_TOTAL, "result", "ok", NULL);
	return;
fail:
	if (mfd >= 0)
		close(mfd);
	if (lfp)
		fclose(lfp);
	config_unref(cfg);
	reload_failed();
}

static void on_prepare(struct ev_loop *l, ev_prepare *w, int revents)
{
	(void)l; (void)w; (void)revents;
	log_flush();
}

static int metrics_start(const struct config *cfg)
{
	if (!cfg->has_metrics)
		return 0;
	if (metrics_listen(loop, &cfg->metrics, session_count) < 0) {
		log_msg("listen_error", "%s: metrics %s: %s", cfg->metrics_where, cfg->metrics.text,
		    strerror(errno));
		return -1;
	}
	log_msg("listen", "metrics %s", cfg->metrics.text);
	return 0;
}

static void on_usr1(struct ev_loop *l, ev_signal *w, int revents)
{
	(void)l; (void)w; (void)revents;
	if (log_reopen() < 0)
		log_msg("log_error", "cannot reopen the log file: %s", strerror(errno));
}

static void on_drain_check(struct ev_loop *l, ev_timer *w, int revents)
{
	(void)w; (void)revents;
	if (session_count() == 0)
		ev_break(l, EVBREAK_ALL);
}

static void on_grace(struct ev_loop *l, ev_timer *w, int revents)
{
	(void)revents;
	if (w->repeat == 0) {
		log_msg("shutdown", "grace over: closing %u sessions", session_count());
		session_close_all(false);
		ev_timer_set(w, SERVER_FINAL_FLUSH_S, 1.0);   /* repeat != 0 marks the last stage */
		ev_timer_start(l, w);
		return;
	}
	ev_break(l, EVBREAK_ALL);
}

static void on_term(struct ev_loop *l, ev_signal *w, int revents)
{
	(void)w; (void)revents;
	if (draining)
		return;
	draining = true;
	listeners_close();
	log_msg("shutdown", "draining %u sessions for up to %.1fs", session_count(),
	    (double)current->shutdown_grace_ms / 1000.0);
	ev_timer_init(&grace_timer, on_grace, (double)current->shutdown_grace_ms / 1000.0, 0.);
	ev_timer_start(l, &grace_timer);
	ev_timer_init(&drain_check, on_drain_check, 0., 0.05);
	ev_timer_again(l, &drain_check);
	on_drain_check(l, &drain_check, 0);
}

static int drop_privileges(const char *user)
{
	if (!user || geteuid() != 0)
		return 0;
	struct passwd *pw = getpwnam(user);
	if (!pw) {
		fprintf(stderr, "smtpgate: unknown user %s\n", user);
		return -1;
	}
	if (setgroups(1, &pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
		fprintf(stderr, "smtpgate: cannot become %s: %s\n", user, strerror(errno));
		return -1;
	}
	return 0;
}

/* The signals server_run() handles: HOW is SIG_BLOCK or SIG_UNBLOCK. */
static void handled_signals_mask(int how)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	(void)sigprocmask(how, &set, NULL);     /* cannot fail with a valid set */
}

void server_block_signals(void)
{
	handled_signals_mask(SIG_BLOCK);
}

int server_run(struct config *cfg)
{
	int rc = 0;

	current = cfg;
	started_as_root = geteuid() == 0;
	loop = ev_default_loop(EVFLAG_AUTO);
	ev_timer_init(&accept_pause, on_accept_pause, SERVER_ACCEPT_PAUSE_S, 0.0);
	if (!loop) {
		config_unref(cfg);
		return 1;
	}
	if (log_open(cfg->log_target, cfg->log_file, cfg->log_format) < 0) {
		fprintf(stderr, "%s: log %s: %s\n", cfg->log_where, cfg->log_file, strerror(errno));
		config_unref(cfg);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	metrics_touch(METRIC_CONFIG_RELOADS_TOTAL, "result", "ok", NULL);
	metrics_touch(METRIC_CONFIG_RELOADS_TOTAL, "result", "failed", NULL);
	if (listeners_sync(cfg) < 0 || metrics_start(cfg) < 0 ||
	    drop_privileges(cfg->user) < 0) {
		listeners_close();
		metrics_close();
		config_unref(cfg);
		log_close();
		return 1;
	}
	ev_signal_init(&sig_hup, on_hup, SIGHUP);
	ev_signal_init(&sig_term, on_term, SIGTERM);
	ev_signal_init(&sig_int, on_term, SIGINT);
	ev_signal_init(&sig_usr1, on_usr1, SIGUSR1);
	ev_signal_start(loop, &sig_hup);
	ev_signal_start(loop, &sig_term);
	ev_signal_start(loop, &sig_int);
	ev_signal_start(loop, &sig_usr1);
	handled_signals_mask(SIG_UNBLOCK);   /* main() held them until now */
	ev_prepare_init(&log_prepare, on_prepare);
	ev_prepare_start(loop, &log_prepare);
	log_set_batching(true);
	log_msg("start", "smtpgate %s ready", SMTPGATE_VERSION);

	ev_run(loop, 0);

	log_set_batching(false);
	log_msg("stop", "%u sessions left", session_count());
	session_close_all(true);
	metrics_close();
	listeners_close();
	config_unref(current);
	current = NULL;
	buf_pool_drain();
	log_close();
	return rc;
}
