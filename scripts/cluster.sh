#!/usr/bin/env bash
# A Switchboard cluster on this machine, loopback only, to try scale-out
# (docs/scale-out.md): 3 NATS JetStream nodes and 3 `switchboard serve
# --cluster` instances.
#
#   scripts/cluster.sh          start it; Ctrl-C stops everything
#   scripts/cluster.sh stop     stop one started from another terminal
#
# CLUSTER_DIR (default /tmp/switchboard-cluster) holds the NATS stores, the
# logs and the binaries (CLUSTER_BIN, default $CLUSTER_DIR/bin); nats-server
# is installed there with `go install` when missing. Ports: NATS clients
# 4222-4224 (routes 6222-6224, monitoring 8222-8224), gRPC 50051-50053, admin HTTP 9090-9092,
# each plus CLUSTER_PORT_OFFSET (default 0).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${CLUSTER_DIR:-${TMPDIR:-/tmp}/switchboard-cluster}
bin=${CLUSTER_BIN:-$dir/bin}
pids=$dir/pids
o=${CLUSTER_PORT_OFFSET:-0}

stop() {
  [ -f "$pids" ] || return 0
  local pid
  while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$pids"
  while read -r pid; do # serve drains for a few seconds: wait, bounded
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  done <"$pids"
  rm -f "$pids"
  echo "stopped (logs and stores kept in $dir)"
}

if [ "${1:-}" = stop ]; then stop; exit 0; fi
if [ -n "${1:-}" ]; then echo "usage: $0 [stop]" >&2; exit 2; fi
if [ -f "$pids" ]; then echo "$pids exists: already running? ($0 stop)" >&2; exit 1; fi

mkdir -p "$bin" "$dir/logs"
if [ ! -x "$bin/nats-server" ]; then
  echo "installing nats-server into $bin"
  GOBIN=$(cd "$bin" && pwd) go install github.com/nats-io/nats-server/v2@v2.15.2
fi
echo "building switchboard into $bin"
go build -o "$bin/switchboard" ./cmd/switchboard

trap 'stop; exit 0' INT TERM
trap stop EXIT
: >"$pids"

urls=
for i in 1 2 3; do
  routes=
  for j in 1 2 3; do [ "$j" = "$i" ] || routes+="nats://127.0.0.1:$((o + 6221 + j)), "; done
  cat >"$dir/nats$i.conf" <<EOF
server_name: n$i
listen: 127.0.0.1:$((o + 4221 + i))
http: 127.0.0.1:$((o + 8221 + i))
jetstream { store_dir: "$dir/nats$i", sync_interval: always }
cluster { name: sb, listen: 127.0.0.1:$((o + 6221 + i)), routes: [${routes%, }] }
EOF
  "$bin/nats-server" -c "$dir/nats$i.conf" >"$dir/logs/nats$i.log" 2>&1 &
  echo $! >>"$pids"
  urls+="nats://127.0.0.1:$((o + 4221 + i)),"
done

serving() { "$bin/switchboard" --server "127.0.0.1:$((o + 50050 + $1))" status | grep -q '^Health: *SERVING'; }
# until_ok WHAT COMMAND...: retry COMMAND for up to 60 s
until_ok() {
  for _ in $(seq 120); do "${@:2}" >/dev/null 2>&1 && { echo "  $1"; return; }; sleep 0.5; done
  echo "$1: not after 60 s; see $dir/logs" >&2; exit 1
}
for i in 1 2 3; do
  until_ok "nats n$i ready" curl -fs "http://127.0.0.1:$((o + 8221 + i))/healthz"
done

# One after another: the first one creates the stream and buckets (R3
# creations racing each other can time out while JetStream elects leaders).
for i in 1 2 3; do
  "$bin/switchboard" serve --cluster "${urls%,}" --instance "sb$i" \
    --grpc-addr "127.0.0.1:$((o + 50050 + i))" --admin-addr "127.0.0.1:$((o + 9089 + i))" \
    --data-dir "$dir/sb$i" >"$dir/logs/sb$i.log" 2>&1 &
  echo $! >>"$pids"
  until_ok "sb$i SERVING on 127.0.0.1:$((o + 50050 + i))" serving "$i"
done

g1=127.0.0.1:$((o + 50051)) g2=127.0.0.1:$((o + 50052)) g3=127.0.0.1:$((o + 50053))
cat <<EOF

Cluster up: instances sb1, sb2, sb3 on gRPC $g1, $g2, $g3 (consoles at
http://127.0.0.1:$((o + 9090))/console/ and the next two ports), NATS on 127.0.0.1:$((o + 4222))-$((o + 4224)).
Any instance answers any call; from another terminal, try:

  sb="$bin/switchboard --server $g1"
  \$sb listen adt 127.0.0.1:2575        # owned by one instance
  $bin/switchboard peer listen 127.0.0.1:2576 &    # a peer that ACKs
  \$sb connect lab 127.0.0.1:2576
  $bin/switchboard --server $g2 send lab hl7/testdata/adt_a01_v25.hl7
  \$sb ls
  $bin/switchboard --server $g3 recv --from 1
  \$sb journal

kill -9 an owner (the serve processes' pids are in $pids) and another instance
takes its listeners and connections over within the lease TTL (10 s).
Ctrl-C here, or $0 stop, stops everything.
EOF
wait
