#!/usr/bin/env bash
# New TLS connections per second through Tessera with and without the ACME TLS-ALPN-01
# answerer in front of the handshake (issue 10): `acme.challenge: tls-alpn-01` installs a
# pre-TLS callback that parses every ClientHello once more (src/acme/tls_alpn.rs). Same run,
# same binary, alternating rounds; one request per connection (wrk, `Connection: close`), so
# every request is a full TLS handshake.
#
# Run:  benches/handshakes.sh                 (ROUNDS=3 DURATION=10 CONNS=16)
# Uses benches/common.sh (release build, certificates, echo upstream, pinning: wrk and the
# upstream on GEN_CPU, Tessera on PROXY_CPU). Prints conn/s, µs of Tessera CPU per connection
# and the ratio with/without per round.

set -euo pipefail

DURATION=${DURATION:-10}
CONNS=${CONNS:-16}
ROUNDS=${ROUNDS:-3}
GEN_CPU=${GEN_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
REDIS_CPU=$GEN_CPU
KEEP_WORK=${KEEP_WORK:-0}
H2=0
PATH_UNDER_TEST=/small
HOST=localhost
LOG_TAG=handshakes
TOOLS="cargo wrk taskset openssl curl python3"
CLK_TCK=$(getconf CLK_TCK)
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ticks() { # utime + stime of PID (clock ticks)
    local rest
    rest=$(sed 's/^.*) //' "/proc/$1/stat")
    # shellcheck disable=SC2086
    set -- $rest
    echo $((${12} + ${13}))
}

# The ACME directory is never contacted: no tenant asks for a certificate.
ACME_YAML='acme: { directory: "https://acme.invalid/directory", challenge: tls-alpn-01 }'
write_config off none "{ kind: embedded, path: \"$WORK/off/tessera.redb\" }" ""
CFG_OFF=$CFG
write_config on none "{ kind: embedded, path: \"$WORK/on/tessera.redb\" }" "$ACME_YAML"
CFG_ON=$CFG
start_tessera off "$CFG_OFF" || die "tessera (off) did not start"
start_tessera on "$CFG_ON" || die "tessera (on) did not start"

measure() { # NAME → "conn/s µs/conn"
    local name=$1 pid=${TPID[$1]} port=${HTTPS_PORT[$1]} t0 t1 out rps n
    taskset -c "$GEN_CPU" wrk -t1 -c"$CONNS" -d1s -H 'Connection: close' "https://$HOST:$port$PATH_UNDER_TEST" >/dev/null
    t0=$(ticks "$pid")
    out=$(taskset -c "$GEN_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" -H 'Connection: close' "https://$HOST:$port$PATH_UNDER_TEST")
    t1=$(ticks "$pid")
    rps=$(printf '%s\n' "$out" | awk '/Requests\/sec/ {print $2}')
    n=$(printf '%s\n' "$out" | awk '/requests in/ {print $1}')
    if printf '%s\n' "$out" | grep -q 'Non-2xx\|Socket errors'; then
        log "$name: errors: $(printf '%s\n' "$out" | grep 'Non-2xx\|Socket errors')"
    fi
    awk -v r="$rps" -v t=$((t1 - t0)) -v n="$n" -v hz="$CLK_TCK" 'BEGIN { printf "%.0f %.1f", r, t / hz * 1e6 / n }'
}

printf '%-6s %12s %12s %12s %12s %8s\n' round "off conn/s" "off µs/conn" "on conn/s" "on µs/conn" "on/off"
for r in $(seq 1 "$ROUNDS"); do
    read -r off_rps off_us <<<"$(measure off)"
    read -r on_rps on_us <<<"$(measure on)"
    printf '%-6s %12s %12s %12s %12s %8s\n' "$r" "$off_rps" "$off_us" "$on_rps" "$on_us" \
        "$(awk -v a="$on_rps" -v b="$off_rps" 'BEGIN { printf "%.3f", a / b }')"
done
