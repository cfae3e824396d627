#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: safe to re-run, each step skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION="${UV_VERSION:-0.13.9}"
STEPS=9
step() { printf '\n\033[1m[%s/%s] %s\033[0m\n' "$1" "$STEPS" "$2"; }
started=$(date +%s)

step 1 "uv $UV_VERSION (Python package manager)"
if ! command -v uv >/dev/null || [ "$(uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  python3 -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
uv --version

step 2 "platform environment .venv (uv.lock: services, numpy 2, Feast, Evidently, torch)"
uv sync --frozen

step 3 "Triton model runtime .venv-triton (deploy/triton/runtime/uv.lock: numpy<2, torch, peft)"
UV_PROJECT_ENVIRONMENT="$PWD/.venv-triton" uv sync --frozen --project deploy/triton/runtime

step 4 "Apache Kafka jars from Maven Central (deploy/kafka/pom.xml -> build/kafka/libs)"
stamp=build/kafka/.pom.sha256
if [ -f "$stamp" ] && sha256sum --status -c "$stamp" 2>/dev/null; then
  echo "up to date ($(ls build/kafka/libs | wc -l) jars)"
else
  rm -rf build/kafka/libs
  mvn -B -q -f deploy/kafka/pom.xml dependency:copy-dependencies \
      -DoutputDirectory="$PWD/build/kafka/libs" -DincludeScope=runtime
  mkdir -p build/kafka && sha256sum deploy/kafka/pom.xml > "$stamp"
  echo "$(ls build/kafka/libs | wc -l) jars"
fi

step 5 "Triton backend folder (build/triton/backends/python)"
.venv/bin/llmops stack build-triton-backend

step 6 "generated code: protobuf/gRPC stubs (gen/python) and the published contracts (contracts/)"
.venv/bin/llmops generate

step 7 "Go tools (build/go/bin): buf, promtool and helm for make lint; optional grpcurl and ghz for the gateway's tests and bench, protoc-gen-go(-grpc) for the Go examples, jaeger (the local trace backend)"
BUF_VERSION="v1.75.0"
GRPCURL_VERSION="v1.9.4"
GHZ_VERSION="v0.93.0"
PROTOC_GEN_GO_VERSION="v1.36.12"
PROTOC_GEN_GO_GRPC_VERSION="v1.6.2"
PROMTOOL_VERSION="v0.316.0"
JAEGER_VERSION="v1.76.0"
HELM_VERSION="v3.22.0"
if ! command -v go >/dev/null; then
  echo "skipped: go is not installed (make lint needs buf, promtool and helm and will say so; the grpcurl test skips;" \
       "the gateway bench uses its own asyncio client; make up runs without Jaeger and the trace test skips)"
else
  # name, module, required: buf, promtool and helm (the chart check) are needed by `make lint`; the others are optional.
  for tool in "buf github.com/bufbuild/buf/cmd/buf@$BUF_VERSION required" \
              "promtool github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION required" \
              "helm helm.sh/helm/v3/cmd/helm@$HELM_VERSION required" \
              "grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION optional" \
              "ghz github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION optional" \
              "protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION optional" \
              "protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION optional"; do
    read -r name module need <<< "$tool"
    stamp="build/go/.$name.version"
    if [ -x "build/go/bin/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$module" ]; then
      echo "$name: up to date (${module##*@})"
    elif GOBIN="$PWD/build/go/bin" go install "$module"; then
      echo "$module" > "$stamp"; echo "$name: installed ${module##*@}"
    elif [ "$need" = required ]; then
      echo "error: could not install $name (make lint needs it)" >&2; exit 1
    else
      echo "warning: could not install $name (optional; its test skips)" >&2
    fi
  done
  # Jaeger, the local trace backend (optional: `make up` starts it when it is here and runs without
  # it otherwise; its test skips). `go install module@version` refuses it (its go.mod has a replace
  # directive), so it is built inside its module, fetched from the Go module proxy. A large build.
  module="github.com/jaegertracing/jaeger@$JAEGER_VERSION"
  stamp="build/go/.jaeger.version"
  if [ -x build/go/bin/jaeger ] && [ "$(cat "$stamp" 2>/dev/null)" = "$module" ]; then
    echo "jaeger: up to date ($JAEGER_VERSION)"
  elif dir=$(go mod download -json "$module" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') && [ -n "$dir" ] &&
       (out="$PWD/build/go/bin/jaeger" && cd "$dir" && GOFLAGS=-mod=mod go build -trimpath -o "$out" ./cmd/jaeger); then
    echo "$module" > "$stamp"; echo "jaeger: built $JAEGER_VERSION"
  else
    echo "warning: could not build jaeger (optional: make up runs without traces; the trace test skips)" >&2
  fi
fi

step 8 "Node tools (build/node): the AsyncAPI CLI for make lint (tools/node/package-lock.json)"
stamp=build/node/.lock.sha256
if ! command -v npm >/dev/null; then
  echo "skipped: npm is not installed (make lint needs the AsyncAPI CLI and will say so)"
elif [ ! -f tools/node/package-lock.json ]; then
  echo "skipped: tools/node/package-lock.json is missing (make lint needs the AsyncAPI CLI and will say so)"
elif [ -f "$stamp" ] && sha256sum --status -c "$stamp" 2>/dev/null && [ -x build/node/node_modules/.bin/asyncapi ]; then
  echo "up to date (@asyncapi/cli)"
else
  mkdir -p build/node && cp tools/node/package.json tools/node/package-lock.json build/node/
  if (cd build/node && npm ci --no-audit --no-fund --loglevel=error); then
    sha256sum tools/node/package-lock.json > "$stamp"; echo "installed @asyncapi/cli into build/node"
  else
    echo "warning: could not install the AsyncAPI CLI (make lint will say so)" >&2
  fi
fi

step 9 "examples (build/examples): the Java, Go and Node clients, built once online so their tests build offline"
for example in "java mvn java" "go go" "node npm node"; do
  read -r language tools <<< "$example"
  missing=$(for tool in $tools; do command -v "$tool" >/dev/null || printf ' %s' "$tool"; done)
  if [ -n "$missing" ]; then
    echo "$language: skipped (not installed:$missing; its example tests skip)"
  elif [ ! -x examples/build.sh ] || ! examples/build.sh "$language"; then
    echo "warning: the $language examples did not build (their tests will fail the same way; see above)" >&2
  fi
done

printf '\n\033[32mset-up complete in %ss\033[0m\n' "$(( $(date +%s) - started ))"
