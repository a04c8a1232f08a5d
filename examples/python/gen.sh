#!/bin/sh
# gen.sh [OUT]: generate the Python stubs of Switchboard's API from the
# repository's proto/ into OUT (default: gen/ beside this script).
#
# Needs protoc >= 3.15 (switchboard.proto uses proto3 `optional`) and
# grpc_python_plugin; on Debian 12: apt-get install protobuf-compiler
# protobuf-compiler-grpc libprotobuf-dev (the last for the google/protobuf
# imports). Debian's python3-grpc-tools (1.14) bundles protoc 3.5, which
# rejects `optional`: do not use it here.
#
# buf/validate/validate.proto (vendored under proto/buf/validate from
# github.com/bufbuild/protovalidate) is generated too, so the stubs'
# `from buf.validate import validate_pb2` resolves; the google/protobuf
# modules come with the protobuf runtime (python3-protobuf).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
proto=$here/../../proto
out=${1:-$here/gen}

command -v protoc >/dev/null || { echo "gen.sh: protoc not found (apt-get install protobuf-compiler libprotobuf-dev)" >&2; exit 1; }
plugin=$(command -v grpc_python_plugin) || { echo "gen.sh: grpc_python_plugin not found (apt-get install protobuf-compiler-grpc)" >&2; exit 1; }

# "libprotoc 3.21.12" (or "libprotoc 25.1" from 3.22 on): at least 3.15.
version=$(protoc --version | sed -n 's/^libprotoc \([0-9][0-9]*\)\.\([0-9][0-9]*\).*/\1 \2/p')
set -- $version
if [ $# -ne 2 ] || { [ "$1" -eq 3 ] && [ "$2" -lt 15 ]; } || [ "$1" -lt 3 ]; then
  echo "gen.sh: $(protoc --version) is too old: proto3 optional needs protoc >= 3.15" >&2
  exit 1
fi

rm -rf "$out"
mkdir -p "$out"
protoc -I "$proto" \
  --python_out="$out" --pyi_out="$out" \
  --plugin=protoc-gen-grpc_python="$plugin" --grpc_python_out="$out" \
  "$proto/switchboard/v1/switchboard.proto" \
  "$proto/buf/validate/validate.proto"
echo "gen.sh: stubs in $out"
