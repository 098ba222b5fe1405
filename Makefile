# Amber's build. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
DEPS := $(CURDIR)/.deps
export AMBER_DEPS := $(DEPS)
export PATH := $(BIN):$(DEPS)/bin:$(PATH)
# Packages `make test` runs: `make test PKGS=./sidecar/storage/file/...` narrows it.
PKGS ?= ./...
# Where `make test` saves go test's JSON event stream (git-ignored).
TEST_JSON ?= $(DEPS)/test-results.json
# Reads that stream, prints failures, skips and package lines, and ends with
# "N passed, N failed, N skipped" (conformance/tools/testsummary).
TESTSUMMARY := $(DEPS)/bin/testsummary
# -buildvcs=auto stamps the git commit into the binaries (`go version -m
# bin/amber`), which `make bench` reports; it overrides a GOFLAGS that
# disables it, and stays silent outside a git checkout.
BUILDFLAGS ?= -buildvcs=auto

.PHONY: help build deps test e2e demo bench lint cluster cluster-down

help: ## list the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-z][a-zA-Z0-9_-]*:.*## /{printf "  %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build amber (and amber-controller, amber-plugin-* as they exist) into ./bin
	@mkdir -p $(BIN)
	$(GO) build $(BUILDFLAGS) -o $(BIN)/amber ./sidecar/cmd/amber
	@for d in plugins/*/cmd/amber-plugin-*; do [ -d "$$d" ] || continue; $(GO) build $(BUILDFLAGS) -o $(BIN)/$$(basename $$d) ./$$d || exit 1; done
	@if [ -d controller/cmd/amber-controller ]; then $(GO) build $(BUILDFLAGS) -o $(BIN)/amber-controller ./controller/cmd/amber-controller; fi

deps: ## install or build everything the tests need into .deps (idempotent, cached)
	@bash conformance/deps.sh "$(DEPS)"
	$(GO) mod download
	@$(MAKE) --no-print-directory $(TESTSUMMARY)

$(TESTSUMMARY): conformance/tools/testsummary/go.mod $(wildcard conformance/tools/testsummary/*.go)
	@mkdir -p $(dir $@)
	cd conformance/tools/testsummary && GOWORK=off $(GO) build -o $(abspath $@) .

# The tools modules have their own go.mod, so `go test ./...` from the root
# never enters them: testsummary's and the test CSI driver's own tests run
# first, on their own.
test: build $(TESTSUMMARY) ## run every test, real servers included (AMBER_TEST_REQUIRE_ALL=1 fails on any skip)
	@cd conformance/tools/testsummary && GOWORK=off $(GO) test -count=1 ./...
	@cd conformance/tools/csi && GOWORK=off $(GO) test -count=1 ./hostpath
	@mkdir -p $(dir $(TEST_JSON))
	set -o pipefail; $(GO) test -json -count=1 -timeout 70m $(PKGS) | $(TESTSUMMARY) -json $(TEST_JSON)

# The Kubernetes tests alone: a real kubelet running real pods (needs root).
# `make test` runs them too.
e2e: build $(TESTSUMMARY) ## run the Kubernetes end-to-end tests alone (real kubelet and pods; part of make test)
	@mkdir -p $(DEPS)
	set -o pipefail; $(GO) test -json -count=1 -timeout 30m -run '^TestKube' ./conformance/ | $(TESTSUMMARY) -json $(DEPS)/e2e-results.json

demo: build ## back up and restore on a throwaway local repository, saying each step
	@bash docs/demo.sh

bench: build ## measure amber side by side with its peers; writes docs/benchmarks.md
	@bash docs/bench.sh
	@bash docs/bench-mongodb.sh # MongoDB section (on FerretDB), appended to docs/benchmarks.md
	@bash docs/bench-k8s-restore.sh # clone restore of the standard data set on the real-kubelet test bed (RTO), appended to docs/benchmarks.md

lint: ## vet and gofmt
	$(GO) vet ./...
	CGO_ENABLED=0 $(GO) vet ./sidecar/... ./plugins/... ./controller/...
	cd conformance/tools/testsummary && GOWORK=off $(GO) vet ./...
	cd conformance/tools/csi && GOWORK=off $(GO) vet ./hostpath
	@out=$$(gofmt -l $$(ls -d sidecar plugins controller conformance charts 2>/dev/null)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# A one-node Kubernetes cluster with a real kubelet for a person (the test
# bed's, conformance/testbed/k8s.go). State, log and kubeconfig in CLUSTER_DIR.
# CLUSTER_FLAGS adds to it: -load IMAGE.tar and -apply MANIFESTS (a file or a
# directory: CRDs, the controller, its webhook), each repeatable;
# -images=false skips building the PostgreSQL and amber images.
CLUSTER_DIR ?= $(DEPS)/cluster
CLUSTER_FLAGS ?=
TESTCLUSTER := $(DEPS)/bin/amber-testcluster

cluster: ## start a one-node Kubernetes cluster (real kubelet) in the background; kubeconfig in .deps/cluster/kubeconfig
	@mkdir -p $(dir $(TESTCLUSTER))
	$(GO) build -o $(TESTCLUSTER) ./conformance/cmd/amber-testcluster
	@$(TESTCLUSTER) up -dir $(CLUSTER_DIR) $(CLUSTER_FLAGS)

cluster-down: ## stop the cluster `make cluster` started and remove everything it made
	@if [ -x $(TESTCLUSTER) ]; then $(TESTCLUSTER) down -dir $(CLUSTER_DIR); \
	else $(GO) run ./conformance/cmd/amber-testcluster down -dir $(CLUSTER_DIR); fi
