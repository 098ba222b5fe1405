# Amber's build. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
DEPS := $(CURDIR)/.deps
export AMBER_DEPS := $(DEPS)
export PATH := $(BIN):$(DEPS)/bin:$(PATH)

.PHONY: help build deps test demo bench lint

help: ## list the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-z][a-zA-Z_-]*:.*## /{printf "  %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build amber (and amber-controller, amber-plugin-* as they exist) into ./bin
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/amber ./sidecar/cmd/amber
	@for d in plugins/*/cmd/amber-plugin-*; do [ -d "$$d" ] && $(GO) build -o $(BIN)/$$(basename $$d) ./$$d || true; done
	@[ -d controller/cmd/amber-controller ] && $(GO) build -o $(BIN)/amber-controller ./controller/cmd/amber-controller || true

deps: ## install or build everything the tests need into .deps (idempotent, cached)
	@bash conformance/deps.sh "$(DEPS)"
	$(GO) mod download

test: build ## run every test, real servers included (AMBER_TEST_REQUIRE_ALL=1 fails on any skip)
	$(GO) test -count=1 -timeout 45m ./...

demo: build ## back up and restore on a throwaway local repository, saying each step
	@bash docs/demo.sh

bench: build ## measure amber side by side with its peers; writes docs/benchmarks.md
	@bash docs/bench.sh

lint: ## vet and gofmt
	$(GO) vet ./...
	@out=$$(gofmt -l $$(ls -d sidecar plugins controller conformance 2>/dev/null)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
