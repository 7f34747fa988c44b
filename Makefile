# Plexus: `make run` starts a single node with the default manifests; `make test` runs every test.
SHELL := /bin/bash
SWIFT ?= swift

.PHONY: run test build release bootstrap abi-check lint format bench-abi bench-core bench-tcp bench-http bench-raft-local bench-raft bench-grpc bench-admin bench-deploy bench-ledger bench-registry bench-isolation gen-protos fuzz fuzz-long soak clean

bootstrap:
	@scripts/bootstrap

build: bootstrap
	$(SWIFT) build
	scripts/build-c-plugins debug

release: bootstrap
	$(SWIFT) build -c release
	scripts/build-c-plugins release

## Builds the kernel and every plugin in release and starts a node with plugin-manifests/ (Ctrl-C stops it).
run: release
	.build/release/plexus serve --config plexus.yaml

## The whole test suite: formatting, the ABI guard, then the Swift unit, fixture, end-to-end and interop tests,
## then every fuzz target's committed inputs replayed and a short run of each (FUZZ_SECONDS, default 10).
## Suites that build Swift packages or start servers of their own (etcd, Redis, PostgreSQL) under load: run one at a
## time after the rest, so that they neither starve the timing-sensitive tests nor are starved by them.
HEAVY_TESTS := PluginScaffoldTests|StorageUpgradeTests|EtcdClientTests|EtcdRegistryTests|LedgerRegistryMetadataTests|RaftRegistryClusterTests|LedgerStorageCrashTests|LedgerBookieClusterTests|LedgerWriterFailoverTests|LedgerDiskFaultTests|LedgerBookieLossTests|PlexusConnectorTests|ProtocolConformanceTests|ConnectorConformanceTests

test: bootstrap
	scripts/lint
	scripts/abi-check
	scripts/abi-check --self-test
	scripts/interop-deps
	scripts/etcd-deps
	$(SWIFT) build
	scripts/build-c-plugins debug
	$(SWIFT) test --skip '$(HEAVY_TESTS)'
	$(SWIFT) test --skip-build --no-parallel --filter '$(HEAVY_TESTS)'
	scripts/fuzz --check

abi-check: bootstrap
	scripts/abi-check

lint:
	scripts/lint

format:
	scripts/lint --fix

## ABI call overhead against direct Swift calls, and load+start time of 1, 10 and 50 plugins.
bench-abi: bootstrap
	benchmarks/abi/run

## In-process publish → store → subscriber → ack (memory-storage; raft-log fsync never) against their targets and raw
## ABI calls; 10,000 topics' threads and RSS; memory over a long run.
bench-core: bootstrap
	benchmarks/core/run

## Plexus against NATS core, NATS JetStream and Redis Streams over TCP (plexus bench); table, ratios, plot.
bench-tcp: bootstrap
	benchmarks/tcp/run

## Random faults (kill -9, SIGSTOP, cut links, restarts, a flipped bit or a truncated segment on a member)
## against a three-node raft-log cluster under an acknowledged write load for SOAK_MINUTES (default 10), then
## every replica checked from disk; then random disk faults (ENOSPC, EIO, short writes through the faultfs
## shim) against one node for SOAK_MINUTES; then random faults (kill -9 or SIGSTOP of a bookie or of the
## writer, whose stream the other node then fences and recovers; both writers at once; a writer paused past
## its bookie timeout; everything restarted)
## against ledger-storage with five bookies, two writer nodes and etcd for SOAK_MINUTES, then every topic read
## back from both writers and checked.
## PLEXUS_SOAK_SEED=N replays a run. The short forms run in `make test`.
SOAK_MINUTES ?= 10
soak: bootstrap
	scripts/etcd-deps
	$(SWIFT) build
	scripts/build-c-plugins debug
	PLEXUS_SOAK_MINUTES=$(SOAK_MINUTES) $(SWIFT) test \
		--filter 'RaftClusterSoakTests|RaftLogDiskFaultSoakTests|LedgerClusterSoakTests'

## libFuzzer on every decoder (Tests/Fuzz/README.md), one target after another, FUZZ_SECONDS each (default 60);
## a table of executions, executions/s and coverage at the end; findings go to .build/fuzz/<target>/crashes/.
fuzz: bootstrap
	FUZZ_SECONDS=$${FUZZ_SECONDS:-60} scripts/fuzz --all

## The same, FUZZ_SECONDS each with a default of 600 (ten minutes a target, an hour in all).
fuzz-long: bootstrap
	FUZZ_SECONDS=$${FUZZ_SECONDS:-600} scripts/fuzz --all

## Single-member raft-log: 1 KiB appends through the plugin (fsync always) vs raw write+fdatasync group commits.
bench-raft-local: bootstrap
	benchmarks/raft/run

## Issue 6: three raft-log members vs three etcd 3.4 members (1 KiB durable writes), one member vs the disk's
## group-commit ceiling, 20 leader kills; one table with ratios (benchmarks/RaftBench/README.md).
bench-raft: bootstrap
	benchmarks/RaftBench/run

## HTTP ingress (1 KiB binary-mode events, wrk, keep-alive) vs nginx's static 202; webhook delivery rate and p99.
bench-http: bootstrap
	benchmarks/http/run

## Client-streaming gRPC publish of 1 KiB events into raft-log against the TCP protocol on the same storage and
## harness (ratio), unary publish and streaming subscribe rates, p99s (benchmarks/grpc/README.md).
bench-grpc: bootstrap
	benchmarks/grpc/run

## The admin dashboard on an idle node with 1,000 topics and 100 groups: first paint in headless Chromium
## against 1 s, and the node's CPU at one refresh a second against 2% of a core (benchmarks/admin/README.md).
bench-admin: bootstrap
	benchmarks/admin/run

## A storage plugin in a plugin-host child (isolation: process) against the same plugin in-process: publish p50
## latency and throughput over TCP, same load, and the ratios (benchmarks/isolation/README.md).
bench-isolation: bootstrap
	benchmarks/isolation/run

## etcd-registry's lookups/s from its watched cache (in process, through the C vtable; target >= 1,000,000/s) and
## the p99 time for a membership change to reach a watch on another instance, beside standalone-registry
## (benchmarks/registry/README.md).
bench-registry: bootstrap
	benchmarks/registry/run

## Checks that the committed Swift code of protos/ and of Plugins/EtcdRegistry/protos/ is what they generate
## (builds the protoc plugins first, about ten minutes the first time); `scripts/gen-protos` and
## `scripts/gen-etcd-protos` rewrite it.
gen-protos:
	scripts/gen-protos --check
	scripts/gen-etcd-protos --check

clean:
	rm -rf .build .plexus

## A running node's TCP protocol replaced 100 times under a steady 20,000 events/s acknowledged load: p99 against
## the same load without replacements, acknowledged loss and refused connections (benchmarks/deploy/README.md).
bench-deploy: bootstrap
	benchmarks/deploy/run

## One ledger bookie's journal (1 KiB adds, closed-loop writers) against a raw pwrite+fdatasync loop writing the
## same bytes per sync, in the same run; then three ledger-storage bookies (E=3 Qw=2 Qa=2) against three raft-log
## members on the same harness and load (benchmarks/RaftBench, section ledger); ratios (benchmarks/LedgerBench/README.md).
bench-ledger: bootstrap
	$(SWIFT) build -c release --product plexus-bench-ledger
	.build/release/plexus-bench-ledger --dir $${BENCH_DIR:-.build} --seconds $${BENCH_SECONDS:-3}
	BENCH_RAFT_JSON=benchmarks/results/ledger.json benchmarks/RaftBench/run --sections ledger $(BENCH_LEDGER_ARGS)

## Issue 16: each shipped connector (Redis Streams, PostgreSQL, Files) in a node beside its external system's own
## client with the same batching (redis-benchmark -P, a libpq INSERT/COPY loop, append+fsync), each source beside
## its sink; one table with the ratios (benchmarks/connectors/README.md).
.PHONY: bench-connectors
bench-connectors: bootstrap
	benchmarks/connectors/run
