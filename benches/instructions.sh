#!/usr/bin/env bash
# Instructions per request: a noise-free figure for the request path, bare Pingora vs Tessera.
#
#   benches/instructions.sh                          # default cases, ~5 min on 2 cores
#   N1=300 N2=1300 CONNS=8 ONLY="bare-h1 split-h1" benches/instructions.sh
#   H2_STREAMS=8 ONLY="bare-h2 split-h2" benches/instructions.sh   # multiplexed HTTP/2
#
# Each proxy runs under `valgrind --tool=callgrind` with instrumentation off during start-up;
# after a warm-up (connections, upstream pool, caches) it is switched on, h2load sends N1
# requests, callgrind dumps, h2load sends N2 requests, callgrind dumps. The figure is
# (Ir(N2 run) - Ir(N1 run)) / (N2 - N1): both runs open the same CONNS connections, so TLS
# handshakes and connection set-up cancel out and what is left is the cost of one more
# keep-alive request, every thread of the process included (session log writer and so on).
# Hardware counters (`perf stat -e instructions`) are not available on this VM; callgrind
# counts guest instructions exactly, so reruns agree to well under 1 %.
#
# Cases (same certificate, upstream and header work as benches/load.sh):
#   bare-h1, bare-h2    examples/bare_proxy, HTTP/1.1 and HTTP/2 over TLS
#   lean-h1, lean-h2    examples/bare_proxy --lean: the same work on pingora-core alone (its
#                       server session, HTTP/1 connector and pool; no pingora-proxy), to show
#                       what pingora-proxy's generic machinery costs (not in the default set)
#   none-h1             Tessera, tenant auth: none (session log and anomaly on, the defaults)
#   split-h1, split-h2  Tessera, split token, embedded store (the full path)
#   split-nolog-h1      as split-h1, session log and anomaly detection off
#   split-general-h1/h2 as split-h1/h2 with lean_path: false: every request through pingora-proxy
#                       (split-* and none-* take Tessera's lean path, src/proxy/lean.rs)
#   split-case-h1       as split-h1, with upstream.preserve_header_case: true
#
# Requires: valgrind (callgrind_control), h2load (nghttp2-client), and what benches/load.sh needs.

set -euo pipefail

N1=${N1:-300}
N2=${N2:-1300}
CONNS=${CONNS:-8}
H2_STREAMS=${H2_STREAMS:-1} # concurrent streams per HTTP/2 connection (h2load -m)
WARM=${WARM:-300}
ONLY=${ONLY:-}
GEN_CPU=${GEN_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
REDIS_CPU=${REDIS_CPU:-$GEN_CPU}
KEEP_WORK=${KEEP_WORK:-0}
PATH_UNDER_TEST=/small
HOST=localhost

LOG_TAG=instructions
TOOLS="cargo taskset openssl curl python3 valgrind callgrind_control"
READY_TRIES=1800 # start-up under valgrind is slow
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# %p: one output file per process (each dump appends .1, .2, ...).
PROXY_WRAP="valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$WORK/callgrind.%p"
command -v h2load >/dev/null || die "h2load not found (apt-get install nghttp2-client)"

want() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }

CASES=()
declare -A IPR
# dumps_of PID: the callgrind dump files of PID, oldest first (callgrind.PID.1, .2, ...).
dumps_of() { find "$WORK" -maxdepth 1 -name "callgrind.$1.*" | sort -t. -k3,3n; }
# totals FILE: the event total (Ir) of one callgrind dump (its `summary:` line can wrap after
# instrumentation was switched off and on again; `totals:` is right).
totals() { awk '/^totals:/ { print $2; exit }' "$1"; }

# measure NAME PID PROTO URL [h2load args]: instructions per request → IPR[NAME].
measure() {
    local name=$1 pid=$2 proto=$3 url=$4 flag=() i1 i2 before
    shift 4
    if [ "$proto" = h1 ]; then flag=(--h1); else flag=(-m"$H2_STREAMS"); fi
    CASES+=("$name")
    taskset -c "$GEN_CPU" h2load "${flag[@]}" -n"$WARM" -c"$CONNS" "$@" "$url" >"$WORK/warm-$name.txt" 2>&1 || true
    callgrind_control --instr=on "$pid" >/dev/null
    local n out dumps=()
    for n in "$N1" "$N2"; do
        out=$(taskset -c "$GEN_CPU" h2load "${flag[@]}" -n"$n" -c"$CONNS" "$@" "$url" 2>&1) || true
        printf '%s\n' "$out" >>"$WORK/h2load-$name.txt"
        if ! printf '%s\n' "$out" | grep -q "^status codes: $n 2xx"; then
            log "case $name: not every request answered 200 (see $WORK/h2load-$name.txt)"
            IPR[$name]=FAILED
            FAILED=1
            callgrind_control --instr=off "$pid" >/dev/null || true
            return 0
        fi
        before=$(dumps_of "$pid" | wc -l)
        callgrind_control --dump="$name-$n" "$pid" >/dev/null
        # the dump is written by the guest; wait for the new file
        for _ in $(seq 1 300); do
            [ "$(dumps_of "$pid" | wc -l)" -gt "$before" ] && break
            sleep 0.1
        done
        dumps+=("$(dumps_of "$pid" | tail -n1)")
    done
    callgrind_control --instr=off "$pid" >/dev/null || true
    i1=$(totals "${dumps[0]}")
    i2=$(totals "${dumps[1]}")
    IPR[$name]=$(awk -v a="$i1" -v b="$i2" -v n1="$N1" -v n2="$N2" 'BEGIN { printf "%.0f", (b - a) / (n2 - n1) }')
    log "case $name: Ir $i1 for $N1 requests, $i2 for $N2 → ${IPR[$name]} per request"
}

URL() { echo "https://$HOST:$1$PATH_UNDER_TEST"; }
EMBEDDED() { echo "{ kind: embedded, path: \"$WORK/$1/tessera.redb\" }"; }
NOLOG=$'session_log: { enabled: false }\nanomaly: { enabled: false }'

if want bare-h1 || want bare-h2; then
    if start_bare; then
        want bare-h1 && measure bare-h1 "$BARE_PID" h1 "$(URL "$BARE_PORT")"
        want bare-h2 && measure bare-h2 "$BARE_PID" h2 "$(URL "$BARE_PORT")"
    else
        FAILED=1
    fi
    stop_pid "$BARE_PID"
fi

# Only when asked for (ONLY=...): a measuring stick, not a shipped path.
if [ -n "$ONLY" ] && { want lean-h1 || want lean-h2; }; then
    if start_bare --lean; then
        want lean-h1 && measure lean-h1 "$BARE_PID" h1 "$(URL "$BARE_PORT")"
        want lean-h2 && measure lean-h2 "$BARE_PID" h2 "$(URL "$BARE_PORT")"
    else
        FAILED=1
    fi
    stop_pid "$BARE_PID"
fi

if want none-h1; then
    write_config plain none "$(EMBEDDED plain)" ""
    if start_tessera plain "$CFG"; then
        measure none-h1 "${TPID[plain]}" h1 "$(URL "${HTTPS_PORT[plain]}")"
    else
        FAILED=1
    fi
    stop_tessera plain
fi

# split NAME EXTRA_YAML PROTO...: one Tessera instance, a minted Part A, one case per protocol.
split() {
    local name=$1 extra=$2 proto
    shift 2
    local any=0
    for proto in "$@"; do want "$name-$proto" && any=1; done
    [ "$any" = 1 ] || return 0
    write_config "$name" split_token "$(EMBEDDED "$name")" "$extra"
    if start_tessera "$name" "$CFG" && mint "$name"; then
        for proto in "$@"; do
            want "$name-$proto" || continue
            measure "$name-$proto" "${TPID[$name]}" "$proto" "$(URL "${HTTPS_PORT[$name]}")" \
                -H "Authorization: Bearer ${PART_A[$name]}"
        done
    else
        FAILED=1
    fi
    stop_tessera "$name"
}
split split "" h1 h2
split split-nolog "$NOLOG" h1
split split-general "lean_path: false" h1 h2
split split-case "upstream: { preserve_header_case: true }" h1

echo
echo "Instructions per request (callgrind Ir, (Ir[$N2 requests] - Ir[$N1 requests]) / $((N2 - N1)),"
echo "h2load -c$CONNS (HTTP/2: -m$H2_STREAMS) over TLS, keep-alive, path $PATH_UNDER_TEST; every thread of the proxy process)"
echo
printf '%-16s %14s %9s\n' case "instr/request" "/bare"
printf '%-16s %14s %9s\n' "----------------" "--------------" "---------"
for c in "${CASES[@]}"; do
    base=bare-${c##*-}
    r=$(awk -v a="${IPR[$c]}" -v b="${IPR[$base]:-}" 'BEGIN { if (a+0 > 0 && b+0 > 0) printf "%.3f", a/b; else printf "-" }')
    printf '%-16s %14s %9s\n' "$c" "${IPR[$c]}" "$r"
done
[ "$FAILED" = 0 ] || { log "one or more cases failed (see above)"; exit 1; }
