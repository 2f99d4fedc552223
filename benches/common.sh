# Shared set-up for benches/load.sh and benches/instructions.sh (sourced, not run): helpers,
# build (tessera + examples/bare_proxy), certificates for $HOST, keyring and admin token, the
# echo upstream pinned to $GEN_CPU, Redis on demand, Tessera instances from generated configs.
#
# Environment: PROFILE, TESSERA_BIN, BARE_BIN, SKIP_BUILD (see below).
# The sourcing script sets: LOG_TAG, HOST, PATH_UNDER_TEST, GEN_CPU, PROXY_CPU, REDIS_CPU,
# KEEP_WORK, TOOLS (commands that must exist), and may set PROXY_WRAP (a command prefix for
# the proxy processes, e.g. valgrind) and READY_TRIES (readiness polls of 0.1 s).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROFILE=${PROFILE:-release}   # cargo profile; PROFILE=dist measures the shipped build (LTO)
BIN=${TESSERA_BIN:-$ROOT/target/$PROFILE/tessera}   # override to compare builds
BARE_BIN=${BARE_BIN:-$ROOT/target/$PROFILE/examples/bare_proxy}
PROXY_WRAP=${PROXY_WRAP:-}
READY_TRIES=${READY_TRIES:-300}

log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in $TOOLS; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
[ "$(nproc)" -ge 2 ] || log "warning: fewer than 2 CPUs; pinning to CPU $PROXY_CPU will fail"

# wrk resolves the URL host itself; everything must go to 127.0.0.1 and nowhere else.
resolved=$(getent ahostsv4 "$HOST" | awk '{print $1}' | sort -u | tr '\n' ' ')
[ "$resolved" = "127.0.0.1 " ] || die "$HOST resolves to '$resolved', expected only 127.0.0.1 (fix /etc/hosts)"
if getent ahostsv6 "$HOST" 2>/dev/null | awk '{print $1}' | grep -qv '^::ffff:127\.0\.0\.1$'; then
    log "warning: $HOST also has an IPv6 address; wrk uses the first address that connects"
fi

WORK=$(mktemp -d -t "tessera-$LOG_TAG.XXXXXX")
PIDS=()
FAILED=0

stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid ignored SIGTERM for 15 s; killing"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [ "$KEEP_WORK" = 1 ] || [ "$FAILED" != 0 ] || [ "$rc" != 0 ]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- ports -----------------------------------------------------------------------------------
# free_port VAR: a free loopback port into VAR (not called in $(...), so USED_PORTS sticks).
USED_PORTS=" 6379 18080 18443 "
free_port() {
    local -n _out=$1
    local p
    while :; do
        p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
        case "$USED_PORTS" in *" $p "*) continue ;; esac
        USED_PORTS="$USED_PORTS$p "
        _out=$p
        return
    done
}

# --- readiness (polling, never a blind sleep) -----------------------------------------------
# wait_until PID DESCRIPTION LOGFILE CMD...: run CMD every 0.1 s until it succeeds (30 s max),
# failing early if PID died.
wait_until() {
    local pid=$1 what=$2 logf=$3 i
    shift 3
    for i in $(seq 1 "$READY_TRIES"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$what (pid $pid) exited during start-up"
            show_log "$logf"
            return 1
        fi
        sleep 0.1
    done
    log "$what not ready after $((READY_TRIES / 10)) s"
    show_log "$logf"
    return 1
}
# show_log FILE: last lines of a log, without the session log's JSON lines (stdout by default).
show_log() {
    log "last lines of $1 (session JSON lines omitted):"
    grep -v '^{' "$1" 2>/dev/null | tail -n 25 >&2 || true
}
http_ok() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@")" = 200 ]; }

# --- build -----------------------------------------------------------------------------------
# SKIP_BUILD=1 with TESSERA_BIN / BARE_BIN set measures binaries built elsewhere (another profile).
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building (cargo build --profile $PROFILE)"
    (cd "$ROOT" && cargo build --profile "$PROFILE" --bin tessera --example bare_proxy)
fi
[ -x "$BIN" ] || die "$BIN not built"
[ -x "$BARE_BIN" ] || die "$BARE_BIN not built"
if [ "${H2:-1}" = 1 ] && ! command -v h2load >/dev/null; then
    log "h2load missing; installing nghttp2-client with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null
fi
command -v h2load >/dev/null || H2=0

# --- certificates: a CA and a leaf for localhost ---------------------------------------------
CERTS=$WORK/certs
mkdir -p "$CERTS"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=Tessera load-test CA" -keyout "$CERTS/ca.key" -out "$CERTS/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=$HOST" -keyout "$CERTS/leaf.key" -out "$CERTS/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' "$HOST" >"$CERTS/leaf.ext"
openssl x509 -req -in "$CERTS/leaf.csr" -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca.key" -CAcreateserial \
    -days 2 -extfile "$CERTS/leaf.ext" -out "$CERTS/leaf.pem" 2>/dev/null
cat "$CERTS/leaf.pem" "$CERTS/ca.pem" >"$CERTS/chain.pem"
CERT=$CERTS/chain.pem
KEY=$CERTS/leaf.key

# --- keyring and admin token -----------------------------------------------------------------
"$BIN" keys generate --out "$WORK/keyring" >/dev/null
ADMIN_TOKEN="tsa_$(openssl rand -hex 32)"
ADMIN_SHA=$(printf %s "$ADMIN_TOKEN" | sha256sum | awk '{print $1}')
UPSTREAM_SECRET=upstream-secret-123

# --- echo upstream ---------------------------------------------------------------------------
free_port UP_PORT
taskset -c "$GEN_CPU" "$BIN" upstream-echo --listen "127.0.0.1:$UP_PORT" >"$WORK/upstream.log" 2>&1 &
UP_PID=$!
PIDS+=("$UP_PID")
wait_until "$UP_PID" "echo upstream" "$WORK/upstream.log" http_ok "http://127.0.0.1:$UP_PORT$PATH_UNDER_TEST"
log "echo upstream on 127.0.0.1:$UP_PORT (pid $UP_PID, CPU $GEN_CPU)"

# --- Redis (own instance, never 6379) --------------------------------------------------------
REDIS_PID=
REDIS_PORT=
start_redis() {
    if ! command -v redis-server >/dev/null; then
        log "redis-server missing; installing with apt-get"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    fi
    free_port REDIS_PORT
    taskset -c "$REDIS_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize no --protected-mode yes >"$WORK/redis.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    wait_until "$REDIS_PID" "redis-server" "$WORK/redis.log" redis_ping
    log "redis-server on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID, CPU $REDIS_CPU)"
}
redis_ping() {
    if command -v redis-cli >/dev/null; then
        [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]
    else
        local line
        exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" || return 1
        printf 'PING\r\n' >&3
        read -r -t 1 line <&3 || true
        exec 3>&-
        [ "${line%$'\r'}" = "+PONG" ]
    fi
}

# --- Tessera instances -----------------------------------------------------------------------
# write_config NAME AUTH STORE_YAML EXTRA_YAML [http]: writes WORK/NAME/tessera.yaml into CFG and
# picks the ports (HTTPS_PORT/ADMIN_PORT/HTTP_PORT[NAME]).
declare -A HTTPS_PORT HTTP_PORT ADMIN_PORT TPID PART_A
write_config() {
    local name=$1 auth=$2 store=$3 extra=$4 with_http=${5:-} dir=$WORK/$1
    mkdir -p "$dir"
    local port http_line=""
    free_port port; HTTPS_PORT[$name]=$port
    free_port port; ADMIN_PORT[$name]=$port
    if [ -n "$with_http" ]; then
        free_port port; HTTP_PORT[$name]=$port
        http_line="  http: \"127.0.0.1:${HTTP_PORT[$name]}\""
    fi
    # The session log goes to a file (issue 11's "full path": session log to a file), not to
    # Tessera's default stdout, unless EXTRA configures it (NOLOG turns it off).
    local log_line=""
    [[ "$extra" == *session_log:* ]] || log_line="session_log: { stdout: false, file: \"$dir/sessions.jsonl\" }"
    cat >"$dir/tessera.yaml" <<EOF
# generated by benches/load.sh ($name)
listen:
  https: "127.0.0.1:${HTTPS_PORT[$name]}"
$http_line
  admin: "127.0.0.1:${ADMIN_PORT[$name]}"
threads: 1
grace_period: "1s"
store: $store
keys: { file: "$WORK/keyring" }
admin:
  tokens:
    - { name: bench, sha256: $ADMIN_SHA, scope: operator }
$log_line
$extra
tenants:
  - id: bench
    hostnames: ["$HOST"]
    cert: "$CERT"
    key: "$KEY"
    upstream: "http://127.0.0.1:$UP_PORT"
    auth: $auth
EOF
    CFG=$dir/tessera.yaml
}

# start_tessera NAME CONFIG: start pinned to PROXY_CPU, wait for the admin /readyz.
start_tessera() {
    local name=$1 cfg=$2 pid
    # shellcheck disable=SC2086
    (cd "$WORK/$name" && exec taskset -c "$PROXY_CPU" $PROXY_WRAP "$BIN" serve --config "$cfg" \
        --upgrade-sock "$WORK/$name/upgrade.sock") >"$WORK/$name/tessera.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    TPID[$name]=$pid
    wait_until "$pid" "tessera[$name]" "$WORK/$name/tessera.log" \
        http_ok "http://127.0.0.1:${ADMIN_PORT[$name]}/readyz" || return 1
    log "tessera[$name] ready: https 127.0.0.1:${HTTPS_PORT[$name]}${HTTP_PORT[$name]:+, http 127.0.0.1:${HTTP_PORT[$name]}} (pid $pid, CPU $PROXY_CPU)"
}

# mint NAME: Part A for tenant `bench` through the admin API → PART_A[NAME].
mint() {
    local name=$1 resp
    resp=$(curl -s --max-time 10 -X POST "http://127.0.0.1:${ADMIN_PORT[$name]}/v1/tenants/bench/tokens" \
        -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
        -d "{\"token\":\"$UPSTREAM_SECRET\",\"label\":\"bench\"}") || { log "mint[$name]: admin API unreachable"; return 1; }
    PART_A[$name]=$(printf %s "$resp" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("part_a",""))' 2>/dev/null || true)
    if [ -z "${PART_A[$name]}" ]; then
        log "mint[$name] failed: $resp"
        return 1
    fi
}

stop_tessera() {
    local name=$1
    [ -n "${TPID[$name]:-}" ] && stop_pid "${TPID[$name]}"
    TPID[$name]=
}

# start_bare [ARGS]: examples/bare_proxy pinned to PROXY_CPU on a free port → BARE_PORT,
# BARE_PID; ARGS go to the binary (`--lean`: the pingora-core forwarding loop, no pingora-proxy).
start_bare() {
    mkdir -p "$WORK/bare"
    free_port BARE_PORT
    # shellcheck disable=SC2086
    (cd "$WORK/bare" && exec taskset -c "$PROXY_CPU" $PROXY_WRAP "$BARE_BIN" --listen "127.0.0.1:$BARE_PORT" \
        --upstream "127.0.0.1:$UP_PORT" --cert "$CERT" --key "$KEY" --threads 1 \
        --upgrade-sock "$WORK/bare/upgrade.sock" "$@") >"$WORK/bare/bare.log" 2>&1 &
    BARE_PID=$!
    PIDS+=("$BARE_PID")
    wait_until "$BARE_PID" "bare_proxy" "$WORK/bare/bare.log" \
        http_ok -k --resolve "$HOST:$BARE_PORT:127.0.0.1" "https://$HOST:$BARE_PORT$PATH_UNDER_TEST" || return 1
    log "bare_proxy ready on 127.0.0.1:$BARE_PORT (pid $BARE_PID, CPU $PROXY_CPU)"
}
