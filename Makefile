# Courier: `make demo` runs the demo, `make test` runs every test of every language.
# Build caches live outside the clone (CACHE), so a second run is incremental.
SHELL := /bin/bash
CACHE ?= $(HOME)/.cache/courier
export CARGO_TARGET_DIR ?= $(CACHE)/target
# Go's module and build caches, outside the clone like the others.
export GOMODCACHE ?= $(CACHE)/go/mod
export GOCACHE ?= $(CACHE)/go/build
VENV ?= $(CACHE)/venv
PY := $(VENV)/bin/python
PYTEST_WORKERS ?= 2

.PHONY: demo test test-rust test-py test-go typecheck py-dev venv tools java-peer go-peer bench bench-deps bench-core bench-python bench-go bench-tls clean-cache

demo: py-dev
	cargo build -q -p courier-testpeer
	cd go-cgo && COURIER_FFI_PROFILE=$(GO_FFI_PROFILE) go generate . && go build -o $(CACHE)/bin/courier-go-democlient ./examples/democlient
	COURIER_GO_DEMO=$(CACHE)/bin/courier-go-democlient $(PY) tests/demo.py

test: test-rust test-py typecheck test-go

test-rust:
	cargo test --workspace --locked

test-py: py-dev tools java-peer go-peer
	cargo build -q -p courier-testpeer
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) py/tests tests/interop

typecheck: py-dev
	$(VENV)/bin/mypy --strict py/python/courier
	cd py/tests && $(VENV)/bin/mypy --strict --config-file ../../pyproject.toml .
	cd tests/interop && $(VENV)/bin/mypy --strict --config-file ../../pyproject.toml conftest.py courier_service.py matrix_clients.py test_matrix.py grpc_testing_server.py test_grpc_interop_cases.py test_courier_client_to_grpcio.py test_courier_to_courier.py test_grpcio_client_to_courier.py test_demo.py
	cd tests && MYPYPATH=../py/tests $(VENV)/bin/mypy --strict --config-file ../pyproject.toml demo.py

# The Go binding (go-cgo/): `go generate` builds the static core into go-cgo/lib
# (debug here: it shares cargo test's build), then the Go tests run with the
# race detector against the Rust, Python and grpc-go peers, and the 200k-call
# memory test without it.
GO_FFI_PROFILE ?= debug
test-go: py-dev
	cargo build -q -p courier-testpeer
	cd go-cgo && COURIER_FFI_PROFILE=$(GO_FFI_PROFILE) go generate . \
	  && CACHE=$(CACHE) VENV=$(VENV) COURIER_REQUIRE_PEERS=1 go test -race -count=1 ./... \
	  && CACHE=$(CACHE) VENV=$(VENV) go test -count=1 -run TestRSS .

# The Go peer of the interop matrix (go-cgo/cmd/courier-go-testpeer): the Go
# test service on Courier and on stock grpc-go, and both Go clients' cases.
go-peer:
	cd go-cgo && COURIER_FFI_PROFILE=$(GO_FFI_PROFILE) go generate . && go build -o $(CACHE)/bin/courier-go-testpeer ./cmd/courier-go-testpeer

# Stock tools the tests drive (built once into $(CACHE)/bin from the Go module
# proxy; idempotent): grpcurl, a reflection client for the stub generator's tests.
GRPCURL_VERSION := v1.9.4
tools: $(CACHE)/bin/.grpcurl-$(GRPCURL_VERSION).stamp

$(CACHE)/bin/.grpcurl-$(GRPCURL_VERSION).stamp:
	mkdir -p $(CACHE)/bin
	GOBIN=$(CACHE)/bin go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)
	touch $@

# Jaeger all-in-one (in-memory storage) for the tracing test, built in a module
# of its own (its go.mod has replace directives, which `go install` refuses).
JAEGER_VERSION := v1.76.0
tools: $(CACHE)/bin/.jaeger-$(JAEGER_VERSION).stamp

$(CACHE)/bin/.jaeger-$(JAEGER_VERSION).stamp:
	mkdir -p $(CACHE)/bin $(CACHE)/jaeger-build
	cd $(CACHE)/jaeger-build && { [ -f go.mod ] || go mod init courier-jaeger-build; } \
	  && go get -tool github.com/jaegertracing/jaeger/cmd/jaeger@$(JAEGER_VERSION) \
	  && go build -o $(CACHE)/bin/jaeger github.com/jaegertracing/jaeger/cmd/jaeger
	touch $@

# The stock grpc-java peer (tests/peers/java): one shaded jar with a server of
# courier.test.Test and bench.Echo and the interop matrix's Java client, built
# from Maven Central into $(CACHE) (Maven's repository too); rebuilt only when
# its sources change. Offline first, so a warm cache needs no network.
JAVA_PEER_JAR := $(CACHE)/java-peer/courier-grpc-java-peer.jar
MVN := mvn -q -B -Dmaven.repo.local=$(CACHE)/m2 -Dpeer.build.dir=$(CACHE)/java-peer -f tests/peers/java/pom.xml
java-peer: $(JAVA_PEER_JAR)

$(JAVA_PEER_JAR): tests/peers/java/pom.xml $(shell find tests/peers/java/src -name '*.java') tests/protos/courier/test/test.proto bench/python/echo.proto
	$(MVN) -o package >/dev/null 2>&1 || $(MVN) package
	touch $@

# The official grpc-go interop client (google.golang.org/grpc/interop/client),
# for gRPC's standard interop cases against Courier's Python TestService
# (tests/interop/test_grpc_interop_cases.py). `go install` names it `client`,
# so it is installed into a directory of its own and renamed.
GRPC_GO_INTEROP_VERSION := v1.85.0
tools: $(CACHE)/bin/.grpc-go-interop-client-$(GRPC_GO_INTEROP_VERSION).stamp

$(CACHE)/bin/.grpc-go-interop-client-$(GRPC_GO_INTEROP_VERSION).stamp:
	mkdir -p $(CACHE)/bin/grpc-go-interop
	GOBIN=$(CACHE)/bin/grpc-go-interop go install google.golang.org/grpc/interop/client@$(GRPC_GO_INTEROP_VERSION)
	mv -f $(CACHE)/bin/grpc-go-interop/client $(CACHE)/bin/grpc-go-interop-client
	touch $@

# The Python package, built from this tree into the venv (debug build, editable).
py-dev: venv
	VIRTUAL_ENV=$(VENV) $(VENV)/bin/maturin develop -q

venv: $(VENV)/.stamp

$(VENV)/.stamp: tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r tests/requirements.txt
	touch $@

# The benchmark harness (bench/README.md): builds the release bench binaries,
# the Go servers, the Python release wheel (bench venv) and the grpc-java peer,
# runs every section in interleaved rounds and writes bench/results/REPORT.md and
# chart.svg, about 20 minutes on 2 cores. Env knobs (bench/harness/run.py):
# QUICK=1 (1 round of ~1 s), ROUNDS, SECTIONS, SERVERS, SKIP_BUILD=1, OUT.
bench: bench-deps
	python3 bench/harness/run.py

# Debian tools the harness drives, installed when missing (as .ci/run does).
bench-deps:
	@need=(); command -v h2load >/dev/null || need+=(nghttp2-client); \
	  command -v iperf3 >/dev/null || need+=(iperf3); command -v openssl >/dev/null || need+=(openssl); \
	  command -v taskset >/dev/null || need+=(util-linux); command -v tc >/dev/null || need+=(iproute2); \
	  if [ $${#need[@]} -gt 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$${need[@]}"; fi

# One area of the harness each (reports under bench/results/<area>/).
bench-core: bench-deps
	bash bench/core/run.sh
bench-python: bench-deps
	bash bench/python/run.sh
bench-go: bench-deps
	bash bench/go/run.sh

# TLS handshakes per second of server CPU, providers, tickets, mTLS vs plaintext
# (bench/tls/README.md). ROUNDS and SECS override the defaults.
bench-tls:
	cargo build --release -q -p courier-bench-tls --features ring
	python3 bench/tls/run.py --rounds $${ROUNDS:-3} --secs $${SECS:-3}

clean-cache:
	rm -rf $(CACHE)
