#!/usr/bin/env bash
# bench-cluster.sh: the figures of issue 14 in one run, on loopback.
#
#  1. Inbound msgs/s (MLLP, `bench inbound`) at each --conns on three
#     backends: serve with the embedded Pebble journal, serve --cluster on a
#     single NATS server (R1), serve --cluster on a 3-node NATS cluster (R3);
#     and JetStream's own synchronous publish rate on the same servers
#     (`bench jetstream`, R1 and R3). Rounds alternate (rotate) the targets;
#     the medians and the ratios are printed.
#  2. Send latency through the instance that owns the connection (local) and
#     through another instance of the cluster (routed): two instances on the
#     R3 cluster, one outbound connection owned by A to an ACK peer,
#     `bench outbound --connection` at each --send-calls.
#  3. Failover time: kill -9 the owner, poll the survivor until the
#     connection shows the survivor's instance and OPEN; restart the victim
#     and repeat the other way; for each --lease-ttls.
#
# Every process it starts is stopped on exit, and its scratch directory
# removed (--keep keeps it: the servers' logs are there). Raw results go
# to --out, one JSON object a line; everything printed is computed from it.
#
# Needs: go (builds ./cmd/switchboard), jq, curl, nats-server (PATH,
# $NATS_SERVER, or installed by `go install` into the scratch directory).
set -euo pipefail

ROUNDS=3
DURATION=5s
WARMUP=1s
CONNS="8 64"
SEND_CALLS="1 8"
LEASE_TTLS="10s 3s"
FAILOVERS=""
NATS_CONNS=1
FOLLOW=0
OUT=""
KEEP=0
PORT_BASE=$((20000 + (RANDOM % 110) * 100)) # below the ephemeral range (32768-)
NATS_VERSION=v2.15.2

usage() {
	cat <<EOF
usage: $0 [flags]
  --rounds N          rounds of each comparison, rotating the targets (default $ROUNDS)
  --duration D        measured time of each run (default $DURATION)
  --warmup D          unmeasured time before each run (default $WARMUP)
  --conns "A B"       inbound / publisher counts (default "$CONNS")
  --send-calls "A B"  concurrent Send calls of the latency runs (default "$SEND_CALLS")
  --lease-ttls "A B"  --cluster-lease-ttl values the failover is timed with (default "$LEASE_TTLS")
  --failovers N       kills per lease TTL (default: --rounds)
  --nats-conns N      NATS connections bench jetstream shares (default $NATS_CONNS)
  --follow            also run bench jetstream --follow (the baseline plus the journal's
                      headers-only follower of its stream) as targets js-r1-follow, js-r3-follow
  --out FILE          raw results, JSON lines (default bench-cluster-DATE.jsonl here)
  --port-base N       first loopback port used (default random, now $PORT_BASE)
  --keep              keep the scratch directory (logs, data)
EOF
}

while [ $# -gt 0 ]; do
	case "$1" in
	--rounds) ROUNDS=$2; shift 2 ;;
	--duration) DURATION=$2; shift 2 ;;
	--warmup) WARMUP=$2; shift 2 ;;
	--conns) CONNS=$2; shift 2 ;;
	--send-calls) SEND_CALLS=$2; shift 2 ;;
	--lease-ttls) LEASE_TTLS=$2; shift 2 ;;
	--failovers) FAILOVERS=$2; shift 2 ;;
	--nats-conns) NATS_CONNS=$2; shift 2 ;;
	--follow) FOLLOW=1; shift ;;
	--out) OUT=$2; shift 2 ;;
	--port-base) PORT_BASE=$2; shift 2 ;;
	--keep) KEEP=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "unknown flag $1" >&2; usage >&2; exit 2 ;;
	esac
done
FAILOVERS=${FAILOVERS:-$ROUNDS}

OUT=${OUT:-bench-cluster-$(date -u +%Y%m%dT%H%M%SZ).jsonl}
for t in jq curl go; do
	command -v "$t" >/dev/null || { echo "bench-cluster: needs $t" >&2; exit 1; }
done

REPO=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/bench-cluster.XXXXXX")
declare -A PID # name -> pid of every process started
cleanup() {
	local rc=$?
	for n in "${!PID[@]}"; do kill "${PID[$n]}" 2>/dev/null || true; done
	for n in "${!PID[@]}"; do wait "${PID[$n]}" 2>/dev/null || true; done
	if [ "$KEEP" = 1 ]; then echo "scratch kept: $TMP" >&2; else rm -rf "$TMP"; fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

# dur_s D: a Go duration made of h, m, s, ms parts ("1m30s", "500ms") in seconds.
dur_s() {
	awk -v d="$1" 'BEGIN { t = 0
		while (match(d, /^[0-9.]+(ms|h|m|s)/)) {
			p = substr(d, 1, RLENGTH); d = substr(d, RLENGTH + 1)
			u = p; sub(/^[0-9.]+/, "", u); v = p + 0
			t += (u == "ms") ? v / 1000 : (u == "h") ? v * 3600 : (u == "m") ? v * 60 : v
		}
		if (d != "") exit 1
		print t }'
}
CLK_TCK=$(getconf CLK_TCK)
RUN_S=$(awk -v a="$(dur_s "$DURATION")" -v b="$(dur_s "$WARMUP")" 'BEGIN{print a + b}') || {
	echo "bench-cluster: bad --duration or --warmup" >&2
	exit 2
}
# cpu_ticks PID...: their user+system CPU time so far, in clock ticks.
cpu_ticks() {
	local t=0 p f
	for p in "$@"; do
		f=$(cut -d')' -f2- "/proc/$p/stat" 2>/dev/null) || continue
		t=$((t + $(awk '{print $12 + $13}' <<<"$f")))
	done
	echo $t
}
: >"$OUT"
OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")

# record PHASE BACKEND ROUND [extra jq object]: stdin is a bench --json
# array; each element becomes a line of $OUT with the labels added. With
# CPU0 set (cpu_ticks before the run) and SERVER_PIDS, it adds
# server_cpu_us: those processes' CPU time over the run divided by the
# messages handled in it, estimated as rate x (duration + warm-up).
record() {
	local extra=${4:-}
	[ -n "$extra" ] || extra='{}'
	if [ -n "${CPU0:-}" ]; then
		local cpu_s nats_s
		cpu_s=$(awk -v a="$(cpu_ticks $SERVER_PIDS)" -v b="$CPU0" -v hz="$CLK_TCK" 'BEGIN{print (a - b) / hz}')
		nats_s=$(awk -v a="$(cpu_ticks $NATS_PIDS)" -v b="$NCPU0" -v hz="$CLK_TCK" 'BEGIN{print (a - b) / hz}')
		extra=$(jq -c --argjson c "$cpu_s" --argjson n "$nats_s" --argjson run "$RUN_S" --arg pids "$SERVER_PIDS_LABEL" \
			'. + {server_cpu_s: $c, nats_cpu_s: $n, server_cpu_of: $pids, run_s: $run}' <<<"$extra")
		CPU0=""
	fi
	jq -c --arg phase "$1" --arg backend "$2" --argjson round "$3" --argjson extra "$extra" \
		'.[] + {phase: $phase, backend: $backend, round: $round} + $extra
		| if .server_cpu_s != null and .rate > 0 then .server_cpu_us = (.server_cpu_s * 1e6 / (.rate * .run_s))
		  | .nats_cpu_us = (.nats_cpu_s * 1e6 / (.rate * .run_s)) else . end' >>"$OUT"
}

# --- tools -----------------------------------------------------------------
SB=$TMP/switchboard
log "building switchboard"
(cd "$REPO" && go build -o "$SB" ./cmd/switchboard)
NATS=${NATS_SERVER:-$(command -v nats-server || true)}
if [ -z "$NATS" ]; then
	log "installing nats-server $NATS_VERSION"
	GOBIN=$TMP/bin go install "github.com/nats-io/nats-server/v2@$NATS_VERSION"
	NATS=$TMP/bin/nats-server
fi

NEXT_PORT=$PORT_BASE
port() { # port VAR: sets VAR to the next free loopback port (no subshell: it counts)
	while ss -Htln "sport = :$NEXT_PORT" | grep -q .; do NEXT_PORT=$((NEXT_PORT + 1)); done
	printf -v "$1" %s "$NEXT_PORT"
	NEXT_PORT=$((NEXT_PORT + 1))
}

# start NAME CMD...: runs CMD in the background, output to $TMP/NAME.log.
start() {
	local name=$1
	shift
	"$@" >"$TMP/$name.log" 2>&1 &
	PID[$name]=$!
}
# stop NAME [SIGNAL]
stop() {
	local name=$1 sig=${2:-TERM}
	kill "-$sig" "${PID[$name]}" 2>/dev/null || true
	wait "${PID[$name]}" 2>/dev/null || true
	unset "PID[$name]"
}
# until_ok WHAT SECONDS CMD...: retries CMD every 0.1 s.
until_ok() {
	local what=$1 secs=$2
	shift 2
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if [ $SECONDS -ge $deadline ]; then
			echo "bench-cluster: $what not ready after ${secs}s (logs: $TMP, kept with --keep)" >&2
			return 1
		fi
		sleep 0.1
	done
}

# --- NATS: a single server (R1) and a 3-node cluster (R3) --------------------
nats_node() { # NAME CLIENT_PORT MONITOR_PORT [CLUSTER_PORT ROUTES...]
	local name=$1 cport=$2 mport=$3
	mkdir -p "$TMP/$name"
	{
		echo "server_name: $name"
		echo "listen: 127.0.0.1:$cport"
		echo "http: 127.0.0.1:$mport"
		echo "jetstream { store_dir: \"$TMP/$name/js\", sync_interval: always }"
		if [ $# -gt 3 ]; then
			local rport=$4
			shift 4
			echo "cluster { name: bench, listen: 127.0.0.1:$rport, routes: [$(printf 'nats://127.0.0.1:%s,' "$@" | sed 's/,$//')] }"
		fi
	} >"$TMP/$name.conf"
	start "$name" "$NATS" -c "$TMP/$name.conf"
}
port P1; port M1
nats_node nats-single "$P1" "$M1"
NATS_R1=nats://127.0.0.1:$P1
declare -a CP MP RP
for i in 0 1 2; do port "CP[$i]"; port "MP[$i]"; port "RP[$i]"; done
for i in 0 1 2; do nats_node "nats-c$i" "${CP[$i]}" "${MP[$i]}" "${RP[$i]}" "${RP[@]}"; done
NATS_R3=nats://127.0.0.1:${CP[0]},nats://127.0.0.1:${CP[1]},nats://127.0.0.1:${CP[2]}
log "waiting for NATS (single $NATS_R1; cluster $NATS_R3)"
for m in "$M1" "${MP[@]}"; do until_ok "nats-server :$m" 30 curl -fsS "http://127.0.0.1:$m/healthz"; done

# --- switchboard instances ---------------------------------------------------
declare -A GRPC # name -> gRPC address
# serve_start NAME EXTRA_FLAGS...: starts serve with a fresh data directory.
serve_start() {
	local name=$1
	shift
	local p
	if [ -z "${GRPC[$name]:-}" ]; then port p; GRPC[$name]=127.0.0.1:$p; fi
	port p
	local admin=127.0.0.1:$p
	mkdir -p "$TMP/data-$name"
	start "$name" "$SB" serve --grpc-addr "${GRPC[$name]}" --admin-addr "$admin" \
		--data-dir "$TMP/data-$name" --log-level warn "$@"
	until_ok "serve $name" 60 "$SB" --server "${GRPC[$name]}" ls
}
sbc() { local name=$1; shift; "$SB" --server "${GRPC[$name]}" "$@"; }

declare -A LISTEN # backend -> MLLP listener address
log "starting serve: pebble, cluster R1, cluster R3"
serve_start pebble
serve_start r1 --cluster "$NATS_R1" --cluster-replicas 1 --cluster-name bench-r1 --instance r1
serve_start r3 --cluster "$NATS_R3" --cluster-replicas 3 --cluster-name bench-r3 --instance r3
for b in pebble r1 r3; do
	port p
	LISTEN[$b]=127.0.0.1:$p
	sbc "$b" listen in "${LISTEN[$b]}" >/dev/null
	until_ok "listener of $b" 30 bash -c "exec 3<>/dev/tcp/${LISTEN[$b]%:*}/${LISTEN[$b]#*:}"
done

# --- 1. inbound vs JetStream ---------------------------------------------------
TARGETS=(pebble r1 r3 js-r1 js-r3)
[ "$FOLLOW" = 1 ] && TARGETS+=(js-r1-follow js-r3-follow)
NATS3_PIDS="${PID[nats-c0]} ${PID[nats-c1]} ${PID[nats-c2]}"
run_target() { # TARGET CONNS ROUND
	local t=$1 c=$2 r=$3 i
	case $t in
	pebble) SERVER_PIDS=${PID[pebble]} NATS_PIDS="" SERVER_PIDS_LABEL="serve" ;;
	r1) NATS_PIDS=${PID[nats-single]} SERVER_PIDS="${PID[r1]} $NATS_PIDS" SERVER_PIDS_LABEL="serve+nats-server" ;;
	r3) NATS_PIDS=$NATS3_PIDS SERVER_PIDS="${PID[r3]} $NATS_PIDS" SERVER_PIDS_LABEL="serve+3 nats-servers" ;;
	js-r1*) NATS_PIDS=${PID[nats-single]} SERVER_PIDS=$NATS_PIDS SERVER_PIDS_LABEL="nats-server" ;;
	js-r3*) NATS_PIDS=$NATS3_PIDS SERVER_PIDS=$NATS_PIDS SERVER_PIDS_LABEL="3 nats-servers" ;;
	esac
	CPU0=$(cpu_ticks $SERVER_PIDS) NCPU0=$(cpu_ticks $NATS_PIDS)
	case $t in
	js-*)
		local url=$NATS_R1 reps=1 follow=()
		case $t in js-r3*) url=$NATS_R3 reps=3 ;; esac
		case $t in *-follow) follow=(--follow) ;; esac
		for i in 1 2 3; do # a fresh R3 stream can time out once while its leader is elected
			CPU0=$(cpu_ticks $SERVER_PIDS) NCPU0=$(cpu_ticks $NATS_PIDS)
			if "$SB" bench jetstream --nats "$url" --replicas "$reps" --conns "$c" --nats-conns "$NATS_CONNS" "${follow[@]}" \
				--duration "$DURATION" --warmup "$WARMUP" --target "$t" --json >"$TMP/run.json" 2>"$TMP/run.err"; then
				record inbound "$t" "$r" <"$TMP/run.json"
				return
			fi
			log "bench jetstream $t failed (try $i): $(tail -1 "$TMP/run.err")"
			sleep 1
		done
		return 1
		;;
	*)
		"$SB" bench inbound --addr "${LISTEN[$t]}" --conns "$c" --duration "$DURATION" --warmup "$WARMUP" \
			--target "$t" --json >"$TMP/run.json"
		record inbound "$t" "$r" <"$TMP/run.json" # after the run: record reads the CPU time
		;;
	esac
}
for r in $(seq 1 "$ROUNDS"); do
	for c in $CONNS; do
		n=${#TARGETS[@]}
		order=()
		for k in $(seq 0 $((n - 1))); do order+=("${TARGETS[$(((k + r + c) % n))]}"); done
		log "round $r/$ROUNDS, $c conns: ${order[*]}"
		for t in "${order[@]}"; do run_target "$t" "$c" "$r"; done
	done
done
for b in pebble r1 r3; do stop "$b"; done

# --- 2. local vs routed Send; 3. failover ---------------------------------------
CPU0="" # no CPU figures for these
port p
PEER=127.0.0.1:$p
start peer "$SB" bench baseline --kind ack --addr "$PEER"
until_ok "ack peer" 30 bash -c "exec 3<>/dev/tcp/${PEER%:*}/${PEER#*:}"

# conn_json NAME: the connection "out" as seen by instance NAME.
conn_json() { sbc "$1" ls connections -o json 2>/dev/null | jq -c '[.connections[]? | select(.connection_id == "out")][0] // empty'; }
# owner_open NAME WANT: true when NAME sees "out" OPEN and owned by WANT.
owner_open() {
	local j
	j=$(conn_json "$1") || return 1
	[ -n "$j" ] && [ "$(jq -r '.status.instance' <<<"$j")" = "$2" ] && [ "$(jq -r '.status.state' <<<"$j")" = CONNECTION_STATE_OPEN ]
}

first_ttl=1
for ttl in $LEASE_TTLS; do
	cname=bench-send-${ttl//[^0-9a-z]/}
	flags=(--cluster "$NATS_R3" --cluster-replicas 3 --cluster-name "$cname" --cluster-lease-ttl "$ttl")
	unset "GRPC[a]" "GRPC[b]"
	log "lease TTL $ttl: instances a and b on R3 (cluster $cname)"
	serve_start a "${flags[@]}" --instance a
	serve_start b "${flags[@]}" --instance b
	sbc a connect out "$PEER" >/dev/null
	until_ok "connection out owned by a" 60 owner_open a a
	until_ok "connection out seen by b" 60 owner_open b a
	if [ $first_ttl = 1 ]; then
		for r in $(seq 1 "$ROUNDS"); do
			for calls in $SEND_CALLS; do
				order=(local routed)
				[ $(((r + calls) % 2)) = 1 ] && order=(routed local)
				for how in "${order[@]}"; do
					via=a
					[ "$how" = routed ] && via=b
					log "send round $r/$ROUNDS, $calls calls, $how (via $via)"
					"$SB" bench outbound --grpc-addr "${GRPC[$via]}" --connection out --calls "$calls" \
						--duration "$DURATION" --warmup "$WARMUP" --target "$how" --json |
						record send "$how" "$r" "{\"via\": \"$via\", \"owner\": \"a\"}"
				done
			done
		done
	fi
	first_ttl=0
	owner=a other=b
	for k in $(seq 1 "$FAILOVERS"); do
		log "failover $k/$FAILOVERS (TTL $ttl): kill -9 $owner, watching $other"
		t0=$(date +%s.%N)
		stop "$owner" KILL
		until_ok "takeover by $other" 300 owner_open "$other" "$other"
		t1=$(date +%s.%N)
		secs=$(awk "BEGIN{printf \"%.3f\", $t1 - $t0}")
		jq -cn --arg ttl "$ttl" --argjson s "$secs" --arg from "$owner" --arg to "$other" --argjson round "$k" \
			'{phase: "failover", backend: "r3", lease_ttl: $ttl, seconds: $s, from: $from, to: $to, round: $round}' >>"$OUT"
		log "  $other owns it, OPEN, after $(printf %.2f "$secs") s"
		if [ "$k" -lt "$FAILOVERS" ]; then
			serve_start "$owner" "${flags[@]}" --instance "$owner" # same name, same gRPC port
			until_ok "$owner sees the connection" 60 owner_open "$owner" "$other"
			sleep 1 # let its membership settle before it is the survivor
			tmp=$owner owner=$other other=$tmp
		fi
	done
	for n in a b; do [ -n "${PID[$n]:-}" ] && stop "$n"; done
done

# --- report ----------------------------------------------------------------------
echo
echo "raw results: $OUT"
echo "$(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u +%FT%TZ); rounds $ROUNDS x $DURATION (warm-up $WARMUP)"
echo
echo "inbound msgs/s, median of rounds (p50 / p99 µs; CPU µs/msg of the servers (serve + its nats-servers, or the nats-servers alone) / of the nats-servers in it)"
jq -rs '
def median: sort | if length == 0 then null elif length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end;
def r0: if . == null then "-" else (. * 1 | round | tostring) end;
def x2: if . == null then "-" else ((. * 100 | round) / 100 | tostring) + "x" end;
[.[] | select(.phase == "inbound")] as $in
| ($in | map(.conns) | unique) as $cs
| (reduce $in[] as $r ({}; .[$r.backend + "/" + ($r.conns|tostring)] += [$r])) as $g
| def med($b; $c; $f): ($g[$b + "/" + ($c|tostring)] // []) | map(.[$f] // empty) | median;
(["conns", "pebble", "cluster R1", "cluster R3", "jetstream R1", "jetstream R3", "R1/js-R1", "R3/js-R3", "R1/pebble", "R3/pebble"] | @tsv),
($cs[] as $c
 | [($c|tostring)]
   + ([ "pebble", "r1", "r3", "js-r1", "js-r3"] | map(. as $b | "\(med($b; $c; "rate") | r0) (\(med($b; $c; "p50_us") | r0) / \(med($b; $c; "p99_us") | r0); \(med($b; $c; "server_cpu_us") | r0)/\(med($b; $c; "nats_cpu_us") | r0))"))
   + [ (med("r1"; $c; "rate") / med("js-r1"; $c; "rate") | x2),
       (med("r3"; $c; "rate") / med("js-r3"; $c; "rate") | x2),
       (med("r1"; $c; "rate") / med("pebble"; $c; "rate") | x2),
       (med("r3"; $c; "rate") / med("pebble"; $c; "rate") | x2) ]
 | @tsv)
' "$OUT" | column -t -s $'\t'
if [ "$FOLLOW" = 1 ]; then
	echo
	echo "the JetStream baseline with and without the journal's follower (msgs/s; NATS CPU µs/msg), medians"
	jq -rs '
def median: sort | if length == 0 then null elif length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end;
def r0: if . == null then "-" else (. * 1 | round | tostring) end;
[.[] | select(.phase == "inbound" and (.backend | startswith("js-")))] | group_by([.conns, (.backend | sub("-follow$"; ""))])[]
| (map(select(.backend | endswith("-follow") | not))) as $p | (map(select(.backend | endswith("-follow")))) as $f
| [(.[0].conns | tostring), (.[0].backend | sub("-follow$"; "")),
   ($p | map(.rate) | median | r0) + " (" + ($p | map(.nats_cpu_us // empty) | median | r0) + ")",
   "with follower " + ($f | map(.rate) | median | r0) + " (" + ($f | map(.nats_cpu_us // empty) | median | r0) + ")"]
| @tsv' "$OUT" | column -t -s $'\t'
fi
echo
echo "Send on R3 (direct, connection owned by instance a): median of rounds"
jq -rs '
def median: sort | if length == 0 then null elif length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end;
def r0: if . == null then "-" else (. * 1 | round | tostring) end;
[.[] | select(.phase == "send")] as $s
| (["calls", "via", "msgs/s", "p50 µs", "p99 µs", "errors"] | @tsv),
($s | group_by([.calls // .conns, .backend])[] | . as $grp
 | [(.[0].calls // .[0].conns | tostring), (.[0].backend + " (" + .[0].via + ")"),
    (map(.rate) | median | r0), (map(.p50_us) | median | r0), (map(.p99_us) | median | r0),
    (map(.errors // {} | to_entries[] | .value) | add // 0 | tostring)]
 | @tsv)
' "$OUT" | column -t -s $'\t'
echo
jq -rs '
def median: sort | if length == 0 then null elif length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end;
[.[] | select(.phase == "failover")] | group_by(.lease_ttl)[]
| "failover (kill -9 of the owner until the survivor shows it OPEN and its own), lease TTL \(.[0].lease_ttl): "
  + (map(.seconds * 100 | round / 100 | tostring) | join(", ")) + " s; median " + (map(.seconds) | median * 100 | round / 100 | tostring) + " s"
' "$OUT"
