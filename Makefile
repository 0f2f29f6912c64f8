# weft's build, test and benchmark entry points. `make help` lists them.
SHELL := /bin/bash
GO ?= go
DOCKER ?= $(shell test -x /usr/bin/docker && echo /usr/bin/docker || echo docker)
PLUGIN_NAME ?= weft:latest
# The version built into the binary (`weft version`, `weft status`, the mesh).
# Releases set it (make release VERSION=x.y.z); other builds are named after
# the last release tag: 0.2.0, or 0.2.0-3-gabc1234[-dirty] three commits on.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null | sed 's/^v//' || echo dev)
BUILD := build
LDFLAGS := -s -w -X main.version=$(VERSION)
# Where `make release` pushes: $(REGISTRY)/$(RELEASE_REPO):$(VERSION).
REGISTRY ?=
RELEASE_REPO ?= weft
RELEASE_REF = $(REGISTRY)/$(RELEASE_REPO):$(VERSION)
RELEASE_DIR = $(BUILD)/release/$(VERSION)

# lay-out-plugin DIR: a managed plugin directory in DIR (config.json and
# rootfs/ with the directories the plugin's mounts and sockets need) around
# the binary already built as DIR/rootfs/weft.
define lay-out-plugin
mkdir -p $(1)/rootfs/run/docker/plugins $(1)/rootfs/var/lib/weft $(1)/rootfs/var/lib/docker/swarm $(1)/rootfs/tmp
chmod 1777 $(1)/rootfs/tmp
cp config.json $(1)/config.json
endef
# Settings passed to `docker plugin set` by `make plugin`, e.g. PLUGIN_SET="LOG_LEVEL=debug".
PLUGIN_SET ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: build
build: ## build the static weft and weftlab binaries into build/
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BUILD)/weft ./cmd/weft
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BUILD)/weftlab ./cmd/weftlab

.PHONY: plugin-dir
plugin-dir: build ## lay the managed plugin out in build/plugin (config.json + rootfs/)
	rm -rf $(BUILD)/plugin
	$(call lay-out-plugin,$(BUILD)/plugin)
	cp $(BUILD)/weft $(BUILD)/plugin/rootfs/weft

.PHONY: plugin
plugin: plugin-dir ## build and (re)install the plugin as $(PLUGIN_NAME) on the engine at DOCKER_HOST, then enable it
	@if [ -z "$$DOCKER_HOST" ] || [[ "$$DOCKER_HOST" == unix://* ]]; then mkdir -p /var/lib/weft; fi
	-$(DOCKER) plugin disable -f $(PLUGIN_NAME) >/dev/null 2>&1
	-$(DOCKER) plugin rm -f $(PLUGIN_NAME) >/dev/null 2>&1
	$(DOCKER) plugin create $(PLUGIN_NAME) $(BUILD)/plugin
	$(if $(strip $(PLUGIN_SET)),$(DOCKER) plugin set $(PLUGIN_NAME) $(PLUGIN_SET))
	$(DOCKER) plugin enable $(PLUGIN_NAME)

# A copy of the release left on the engine by an interrupted run is removed
# first, unless it is enabled (a node running it under that name).
.PHONY: release
release: release-args ## build weft VERSION=x.y.z and push it to REGISTRY=host[:port] as $(REGISTRY)/weft:$(VERSION) (through DOCKER_HOST's engine)
	rm -rf $(RELEASE_DIR)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(RELEASE_DIR)/plugin/rootfs/weft ./cmd/weft
	$(call lay-out-plugin,$(RELEASE_DIR)/plugin)
	-@$(DOCKER) plugin rm $(RELEASE_REF) >/dev/null 2>&1
	$(DOCKER) plugin create $(RELEASE_REF) $(RELEASE_DIR)/plugin
	$(DOCKER) plugin push $(RELEASE_REF)
	$(DOCKER) plugin rm $(RELEASE_REF)
	@echo "released $(RELEASE_REF): docker plugin install --grant-all-permissions --alias weft:latest $(RELEASE_REF)"

# release-args refuses a release without an explicit version and registry,
# before anything is built or pushed.
.PHONY: release-args
release-args:
	@if [ "$(origin VERSION)" != "command line" ] && [ "$(origin VERSION)" != "environment" ]; then \
	  echo "make release: set VERSION, the version to release (e.g. make release VERSION=0.2.0 REGISTRY=registry.example.com:5000)" >&2; exit 2; fi
	@if ! [[ "$(VERSION)" =~ ^[0-9]+\.[0-9]+\.[0-9]+([-.][0-9A-Za-z.-]+)?$$ ]]; then \
	  echo "make release: VERSION=$(VERSION) is not a version: want x.y.z or x.y.z-suffix (letters, digits, dots, dashes)" >&2; exit 2; fi
	@if [ -z "$(REGISTRY)" ]; then \
	  echo "make release: set REGISTRY, the registry to push to as host[:port][/path] (e.g. REGISTRY=registry.example.com:5000)" >&2; exit 2; fi
	@if [[ "$(REGISTRY)" == *://* || "$(REGISTRY)" == */ ]]; then \
	  echo "make release: REGISTRY=$(REGISTRY): want host[:port][/path], without a scheme or a trailing slash" >&2; exit 2; fi

.PHONY: check
check: ## go vet, gofmt and go.mod tidiness (weft's module and test/registry's)
	$(GO) vet ./...
	cd test/registry && $(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@for m in . test/registry; do ( cd $$m && cp go.mod /tmp/weft-go.mod.bak && cp go.sum /tmp/weft-go.sum.bak && $(GO) mod tidy && \
	  if ! cmp -s go.mod /tmp/weft-go.mod.bak || ! cmp -s go.sum /tmp/weft-go.sum.bak; then \
	    cp /tmp/weft-go.mod.bak go.mod; cp /tmp/weft-go.sum.bak go.sum; echo "$$m: go.mod/go.sum are not tidy: run go mod tidy there"; exit 1; fi ) || exit 1; done

.PHONY: test-unit
test-unit: ## unit and root (namespace) tests with the race detector
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /test/)

.PHONY: test-e2e
test-e2e: plugin-dir ## end-to-end tests: real dockerd engines, swarm and the plugin in a lab of namespaces (root)
	WEFT_E2E=1 WEFT_PLUGIN_DIR=$(CURDIR)/$(BUILD)/plugin $(GO) test -count=1 -timeout 60m -v ./test/... 2>&1 | tee $(BUILD)/e2e.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go:'; exit $${PIPESTATUS[0]}

# The soak (test/soak): SOAK_DURATION of random operations on a lab of its
# own (weftsoak); SOAK_SEED replays a run, SOAK_OPS picks the kinds (all,
# ci, or a comma list). Its report goes in build/soak/<time>-seed<seed>.
SOAK_DURATION ?= 10m
SOAK_SEED ?=
SOAK_OPS ?= all
SOAK_TIMEOUT ?= 3h
SOAK_ENV = WEFT_E2E=1 WEFT_SOAK=1 WEFT_PLUGIN_DIR=$(CURDIR)/$(BUILD)/plugin WEFT_SOAK_REPORT=$(CURDIR)/$(BUILD)/soak

.PHONY: soak
soak: plugin-dir ## random churn and faults on a 3-host swarm lab, invariants checked all along (SOAK_DURATION=10m, SOAK_SEED, SOAK_OPS); report in build/soak
	$(SOAK_ENV) WEFT_SOAK_DURATION=$(SOAK_DURATION) WEFT_SOAK_SEED=$(SOAK_SEED) WEFT_SOAK_OPS=$(SOAK_OPS) \
	  $(GO) test -count=1 -timeout $(SOAK_TIMEOUT) -run 'TestSoak$$' -v ./test/soak

.PHONY: test-soak
test-soak: plugin-dir ## the short soak CI runs: 3 minutes of churn and plugin restarts (SOAK_OPS=ci), a random seed
	$(SOAK_ENV) WEFT_SOAK_DURATION=3m WEFT_SOAK_SEED=$(SOAK_SEED) WEFT_SOAK_OPS=ci \
	  $(GO) test -count=1 -timeout 30m -run 'TestSoak$$' -v ./test/soak 2>&1 | tee $(BUILD)/soak-ci.log; exit $${PIPESTATUS[0]}

FUZZ_TIME ?= 10s
.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZ_TIME (default 10s); crashers land in testdata/fuzz
	GO=$(GO) FUZZ_TIME=$(FUZZ_TIME) ./hack/fuzz.sh

.PHONY: test
test: check test-unit fuzz test-e2e test-soak ## everything CI runs

.PHONY: bench-build
bench-build: ## build weftbench (harness and in-lab load tools) and its own plugin directory in build/bench
	rm -rf $(BUILD)/bench/plugin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BUILD)/bench/plugin/rootfs/weft ./cmd/weft
	$(call lay-out-plugin,$(BUILD)/bench/plugin)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BUILD)/bench/weftbench ./cmd/weftbench

.PHONY: bench
bench: bench-build ## benchmark weft vs the underlay and Docker's overlay (root, about an hour): bench/RESULTS.md, results.png
	$(BUILD)/bench/weftbench run -plugin $(BUILD)/bench/plugin -out bench $(BENCH_ARGS)

.PHONY: bench-smoke
bench-smoke: bench-build ## a short bench run (one repetition, small sizes) into build/bench/smoke
	$(BUILD)/bench/weftbench run -smoke -plugin $(BUILD)/bench/plugin -out $(BUILD)/bench/smoke $(BENCH_ARGS)

.PHONY: setup
setup: ## install what weft's build, demo and tests need (Debian, as root)
	./hack/setup.sh

.PHONY: demo
demo: plugin-dir ## start a 3-host lab with swarm and the plugin, and show containers talking
	./hack/demo.sh

.PHONY: lab-down
lab-down: build ## remove the lab (engines, namespaces, bridge) left by demo or tests
	$(BUILD)/weftlab down

.PHONY: clean
clean: ## remove build outputs
	rm -rf $(BUILD)
