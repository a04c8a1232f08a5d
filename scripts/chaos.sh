#!/usr/bin/env bash
# The chaos run of a Switchboard cluster (internal/cmd/chaos): 3 nats-server
# and 3 `switchboard serve --cluster` processes on loopback, inbound MLLP
# load and queued outbound sends while instances are killed -9 and NATS
# nodes paused; then every ACKed and every accepted message is checked.
#
#   scripts/chaos.sh [chaos flags]     e.g. --duration 45s --seed 42
#
# Binaries go to CHAOS_BIN (default: a bin directory in the system's temp
# directory); nats-server is installed there with `go install` if missing.
# Exits non-zero on any loss (the program prints what and where its logs
# are).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${CHAOS_BIN:-${TMPDIR:-/tmp}/switchboard-chaos-bin}
mkdir -p "$bin"
bin=$(cd "$bin" && pwd)
if [ ! -x "$bin/nats-server" ]; then
  echo "installing nats-server into $bin"
  GOBIN=$bin go install github.com/nats-io/nats-server/v2@v2.15.2
fi
go build -o "$bin/switchboard" ./cmd/switchboard
go build -o "$bin/chaos" ./internal/cmd/chaos
exec "$bin/chaos" --switchboard "$bin/switchboard" --nats-server "$bin/nats-server" "$@"
