#!/usr/bin/env bash
# Builds the examples into build/examples/<language> (git-ignored), skipping a language whose
# inputs have not changed since its last build (a stamp of their sha256), so a second run is fast.
#   examples/build.sh [--offline] [java] [go] [node]     (no language: all three)
# --offline: use only what an earlier online build downloaded (Maven -o, GOPROXY=off, npm --offline);
# the tests build this way, `make setup` builds online once.
set -euo pipefail
cd "$(dirname "$0")/.."

offline=""
languages=()
for argument in "$@"; do
  case "$argument" in
    --offline) offline=1 ;;
    java|go|node) languages+=("$argument") ;;
    *) echo "usage: examples/build.sh [--offline] [java] [go] [node]" >&2; exit 2 ;;
  esac
done
[ ${#languages[@]} -gt 0 ] || languages=(java go node)

# up_to_date <name> <files...>: true when the stamp matches the files' contents; fresh_stamp writes it.
inputs_hash() { find "$@" -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1; }
up_to_date() { local name=$1; shift; [ -f "build/examples/.$name.stamp" ] && [ "$(cat "build/examples/.$name.stamp")" = "$(inputs_hash "$@")" ]; }
fresh_stamp() { local name=$1; shift; mkdir -p build/examples; inputs_hash "$@" > "build/examples/.$name.stamp"; }
need() { command -v "$1" >/dev/null || { echo "error: $1 is not installed ($2)" >&2; exit 3; }; }

build_java() {
  local inputs=(examples/java/pom.xml examples/java/src contracts/proto)
  if up_to_date java "${inputs[@]}" && [ -f build/examples/java/llmops-java-examples.jar ]; then
    echo "java: up to date"; return
  fi
  need mvn "Maven builds the Java examples"
  mvn -B -q -Dstyle.color=never ${offline:+-o} -f examples/java/pom.xml package -DskipTests
  fresh_stamp java "${inputs[@]}"
  echo "java: built build/examples/java/llmops-java-examples.jar (+ lib/)"
}

build_go() {
  local inputs=(examples/go/go.mod examples/go/go.sum examples/go/buf.gen.yaml examples/go/cmd contracts/proto)
  if up_to_date go "${inputs[@]}" && [ -x build/examples/go/bin/producer ] && [ -x build/examples/go/bin/grpc-client ]; then
    echo "go: up to date"; return
  fi
  need go "Go builds the Go examples"
  for tool in buf protoc-gen-go protoc-gen-go-grpc; do
    [ -x "build/go/bin/$tool" ] || { echo "error: build/go/bin/$tool is missing (make setup installs it)" >&2; exit 3; }
  done
  rm -rf build/examples/go/gen
  PATH="$PWD/build/go/bin:$PATH" build/go/bin/buf generate contracts/proto \
    --template examples/go/buf.gen.yaml -o build/examples/go/gen
  # The stubs are their own module (the go_package of the protos), required by examples/go/go.mod.
  {
    echo "module github.com/llmops/llmops/gen/go"
    echo
    echo "go 1.23"
    echo
    grep -E '^\s+google.golang.org/(grpc|protobuf) ' examples/go/go.mod | sed 's/^\s*/require /'
  } > build/examples/go/gen/go.mod
  (
    cd examples/go
    if [ -n "$offline" ]; then export GOPROXY=off; fi
    go build -o ../../build/examples/go/bin/ ./cmd/...
  )
  fresh_stamp go "${inputs[@]}"
  echo "go: built build/examples/go/bin/{producer,grpc-client}"
}

build_node() {
  local inputs=(examples/node/package.json examples/node/package-lock.json)
  if up_to_date node "${inputs[@]}" && [ -d build/examples/node/node_modules/kafkajs ]; then
    echo "node: up to date"; return
  fi
  need npm "npm installs the Node example's kafkajs"
  mkdir -p build/examples/node
  cp examples/node/package.json examples/node/package-lock.json build/examples/node/
  (cd build/examples/node && npm ci --no-audit --no-fund --loglevel=error ${offline:+--offline})
  fresh_stamp node "${inputs[@]}"
  echo "node: installed kafkajs into build/examples/node/node_modules"
}

for language in "${languages[@]}"; do
  "build_$language"
done
