#!/bin/sh
# shellcheck disable=SC2317  # stop_pid and cleanup run from the EXIT trap
# smtpgate in one minute:   sh tests/demo.sh [PATH_TO_SMTPGATE]
#
# Starts smtp-sink as the MTA on a free loopback port and smtpgate in front of
# it (max_recipients 2, text log in a temp file), then sends two messages with
# swaks: one with 1 recipient (passes) and one with 3 recipients (smtpgate
# refuses the 3rd with 452 4.5.3, the first two are delivered). Shows what the
# client saw, what the MTA received and smtpgate's log. Everything it starts is
# stopped by PID on exit. Exit 0 when the demo behaved as described.

set -u

BIN=${1:-./build/smtpgate}
if [ ! -x "$BIN" ]; then
    echo "demo: no smtpgate binary at $BIN (make all)" >&2
    exit 2
fi
for tool in smtp-sink swaks python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "demo: missing $tool (make deps)" >&2; exit 2; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/smtpgate-demo.XXXXXX") || exit 1
SINK_PID=
GATE_PID=

stop_pid() {
    if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
        kill "$1" 2>/dev/null
        i=0
        while kill -0 "$1" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        kill -0 "$1" 2>/dev/null && kill -9 "$1" 2>/dev/null
        wait "$1" 2>/dev/null
    fi
}
cleanup() {
    stop_pid "$GATE_PID"
    stop_pid "$SINK_PID"
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

free_port() {
    python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}
wait_port() {   # wait_port PORT PID: until PORT is in LISTEN state (5 s at most), without connecting
    i=0
    while [ $i -lt 50 ]; do
        kill -0 "$2" 2>/dev/null || return 1
        python3 - "$1" <<'PY' && return 0
import sys
port = "%04X" % int(sys.argv[1])
for name in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        for line in open(name).readlines()[1:]:
            f = line.split()
            if f[1].rsplit(":", 1)[1] == port and f[3] == "0A":
                sys.exit(0)
    except OSError:
        pass
sys.exit(1)
PY
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}
section() {
    printf '\n=== %s\n' "$*"
}

SINK_PORT=$(free_port)
GATE_PORT=$(free_port)

# --- the MTA: smtp-sink, dumping every message to $TMP/mail ----------------------
# (smtp-sink drops to "nobody" when run as root, so the dump directory is open to it)
chmod 755 "$TMP"
mkdir -m 777 "$TMP/mail"
SINK_USER=
[ "$(id -u)" = 0 ] && SINK_USER="-u nobody"
# shellcheck disable=SC2086
smtp-sink $SINK_USER -d "$TMP/mail/%M." "127.0.0.1:$SINK_PORT" 100 >"$TMP/sink.out" 2>&1 &
SINK_PID=$!
if ! wait_port "$SINK_PORT" "$SINK_PID"; then
    echo "demo: smtp-sink did not start" >&2
    cat "$TMP/sink.out" >&2
    exit 1
fi

# --- smtpgate in front ---------------------------------------------------------
cat >"$TMP/smtpgate.conf" <<EOF
# tests/demo.sh: at most 2 recipients per message
log $TMP/smtpgate.log text
max_recipients 2

upstream mta {
    server 127.0.0.1:$SINK_PORT
    forward none
}

listen 127.0.0.1:$GATE_PORT {
    upstream mta
}
EOF

section "smtpgate configuration ($TMP/smtpgate.conf)"
cat "$TMP/smtpgate.conf"
section "smtpgate -t"
if ! "$BIN" -t -c "$TMP/smtpgate.conf"; then
    echo "demo: smtpgate rejected the configuration" >&2
    exit 1
fi

"$BIN" -c "$TMP/smtpgate.conf" >"$TMP/smtpgate.stderr" 2>&1 &
GATE_PID=$!
if ! wait_port "$GATE_PORT" "$GATE_PID"; then
    echo "demo: smtpgate did not listen on 127.0.0.1:$GATE_PORT" >&2
    cat "$TMP/smtpgate.stderr" "$TMP/smtpgate.log" >&2 2>/dev/null
    exit 1
fi
echo "smtp-sink (the MTA) pid $SINK_PID on 127.0.0.1:$SINK_PORT, smtpgate pid $GATE_PID on 127.0.0.1:$GATE_PORT"

SWAKS="swaks --server 127.0.0.1 --port $GATE_PORT --helo client.example --from alice@example.org --timeout 10 --suppress-data"

# --- message 1: one recipient, passes -------------------------------------------
section "message 1: 1 recipient (passes)"
$SWAKS --to bob@example.net --header "Subject: demo 1" >"$TMP/swaks1.out" 2>&1
RC1=$?
cat "$TMP/swaks1.out"
echo "(swaks exit $RC1)"

# --- message 2: three recipients, the 3rd refused by smtpgate --------------------
section "message 2: 3 recipients, max_recipients 2 (the 3rd gets 452 4.5.3)"
$SWAKS --to carol@example.net,dave@example.net,erin@example.net --header "Subject: demo 2" >"$TMP/swaks2.out" 2>&1
RC2=$?
cat "$TMP/swaks2.out"
echo "(swaks exit $RC2)"
section "the RCPT exchange of message 2"
awk '/-> RCPT TO/ { print; if ((getline line) > 0) print line }' "$TMP/swaks2.out"

sleep 0.5   # let the sink write its dumps and smtpgate its close lines

section "what the MTA (smtp-sink) received"
n=0
# shellcheck disable=SC2045  # smtp-sink names the files (no blanks)
for name in $(ls -tr "$TMP/mail"); do     # oldest first
    f=$TMP/mail/$name
    [ -f "$f" ] || continue
    n=$((n + 1))
    echo "--- $(basename "$f")"
    grep -E '^(X-Client-Addr|X-Mail-Args|X-Rcpt-Args|Subject):' "$f"
done
echo "($n messages)"

section "smtpgate log ($TMP/smtpgate.log)"
cat "$TMP/smtpgate.log" 2>/dev/null
if [ -s "$TMP/smtpgate.stderr" ]; then
    section "smtpgate stderr"
    cat "$TMP/smtpgate.stderr"
fi

# --- verdict ----------------------------------------------------------------------
ok=1
[ "$RC1" -eq 0 ] || ok=0
grep -Eq '^<~?\*{0,2} +452[ -]4\.5\.3' "$TMP/swaks2.out" || ok=0
[ "$n" -eq 2 ] || ok=0
if [ -d "$TMP/mail" ]; then
    grep -l '^X-Rcpt-Args:.*erin@example.net' "$TMP"/mail/* >/dev/null 2>&1 && ok=0
fi
section "verdict"
if [ $ok = 1 ]; then
    echo "demo: OK - message 1 delivered; message 2 delivered to 2 recipients, the 3rd refused with 452 4.5.3 and never reached the MTA"
    exit 0
fi
echo "demo: UNEXPECTED - see the output above (message 1 exit $RC1, message 2 exit $RC2, $n messages at the MTA)"
exit 1
