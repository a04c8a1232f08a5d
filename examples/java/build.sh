#!/bin/sh
# build.sh [OUT]: generate the Java stubs of Switchboard's API from the
# repository's proto/, compile them with Example.java against Debian's
# gRPC Java and protobuf Java jars, and write OUT/example.jar (default
# OUT: build/ beside this script). Then: java -jar OUT/example.jar
# build.sh --check: only check that every tool and jar is installed.
#
# Everything comes from Debian 12 packages (no Maven Central):
#   apt-get install default-jdk-headless protobuf-compiler libprotobuf-dev \
#     protobuf-compiler-grpc-java-plugin libgrpc-java libprotobuf-java \
#     libnetty-java libperfmark-java libgoogle-gson-java libguava-java \
#     libjsr305-java liberror-prone-java libgeronimo-annotation-1.3-spec-java
# protoc is 3.21 (proto3 `optional` needs >= 3.15) and matches
# libprotobuf-java 3.21; grpc_java_plugin and libgrpc-java are 1.41.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
proto=$here/../../proto
out=${1:-$here/build}
jars=/usr/share/java

for tool in protoc grpc_java_plugin javac jar java; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool not found (see the apt-get line at the top of build.sh)" >&2; exit 1; }
done

# Compile time: the API and its runtime. javax.annotation.Generated, which
# grpc_java_plugin 1.41 puts on the service class, left the JDK in Java 11:
# geronimo-annotation-1.3-spec has it.
compile="grpc-api grpc-stub grpc-protobuf grpc-core grpc-context protobuf guava jsr305 error_prone_annotations geronimo-annotation-1.3-spec gson"
# Run time in addition: the Netty transport and what grpc-core loads.
runtime="grpc-protobuf-lite grpc-netty netty-buffer netty-codec netty-codec-http netty-codec-http2 netty-codec-socks netty-common netty-handler netty-handler-proxy netty-resolver netty-transport perfmark-api"
cp=
for j in $compile; do
  [ -f "$jars/$j.jar" ] || { echo "build.sh: $jars/$j.jar is missing (see the apt-get line at the top of build.sh)" >&2; exit 1; }
  cp=$cp${cp:+:}$jars/$j.jar
done
manifest_cp=$(echo "$compile" | sed "s|[^ ]*|$jars/&.jar|g")
for j in $runtime; do
  [ -f "$jars/$j.jar" ] || { echo "build.sh: $jars/$j.jar is missing (see the apt-get line at the top of build.sh)" >&2; exit 1; }
  manifest_cp="$manifest_cp $jars/$j.jar"
done

[ "$out" = --check ] && { echo "build.sh: everything is installed"; exit 0; }

rm -rf "$out"
mkdir -p "$out/src" "$out/classes"
protoc -I "$proto" \
  --java_out="$out/src" \
  --plugin=protoc-gen-grpc-java="$(command -v grpc_java_plugin)" --grpc-java_out="$out/src" \
  "$proto/switchboard/v1/switchboard.proto" \
  "$proto/buf/validate/validate.proto"
find "$out/src" -name '*.java' >"$out/sources"
echo "$here/Example.java" >>"$out/sources"
# The stubs are about 6 MB of Java, most of it validate.proto's. javac is
# a short-lived JVM here: the client compiler alone and the serial
# collector halve the CPU it takes; no annotation processors are used.
javac -J-XX:TieredStopAtLevel=1 -J-XX:+UseSerialGC -proc:none -nowarn -encoding UTF-8 \
  -d "$out/classes" -cp "$cp" @"$out/sources"
# A manifest line holds at most 72 bytes: continuation lines start with a space.
{
  echo "Main-Class: Example"
  echo "Class-Path: $manifest_cp" | fold -w 70 | sed '2,$s/^/ /'
} >"$out/manifest"
jar --create --file "$out/example.jar" --manifest "$out/manifest" -C "$out/classes" .
echo "build.sh: $out/example.jar"
