# Thin wrapper over CMake for the README's two commands and CI.
#   make            build (RelWithDebInfo) into build/
#   make run        build, start flashgate + flashgate-settle on the embedded
#                   defaults, rehearse a sale with flashgate-load, keep serving
#   make test       the whole suite: dev build (-Werror) unit + integration + the
#                   simulation's batch + race (Helgrind on the relay and settlement)
#                   in one ctest run (the CPU-bound simulation and Helgrind overlap
#                   the tests that wait),
#                   ASan+UBSan unit + integration + simulation, TSan concurrency
#                   tests (only their programs built), libFuzzer targets for a
#                   bounded time (make fuzz), lint (beside the others, on
#                   the CPU time their waiting tests leave idle)
#   make fuzz       clang + libFuzzer + ASan/UBSan build in build-fuzz/, each
#                   target FUZZ_SECONDS (10) plus every committed reproducer
#   make lint       cppcheck, clang-tidy and the OpenAPI lint, clean or failing (tests/lint/)
#   make faults     the fault suite as one table (tests/fault/run.sh)
#   make mutation   plant each bug of tests/mutation/mutants/ in a copy of the
#                   tree, run the tests that should catch it, fail on a survivor
#                   or a stale mutant (tests/mutation/run.sh; not part of make
#                   test: minutes; MUTANTS=REGEX picks some)
#   make soak       10 minutes of steady mixed load: RSS, fds, spool, p99 plotted
#   make soak-asan  30 s of steady load on the ASan build: no leak at the stop
#   make bench      benchmarks (bench/bench.sh), printed side by side
#   make bench-overload  the overload benchmark (bench/overload.sh, ~12 min: 3 rounds;
#                   BENCH_OVERLOAD_FLAGS=--quick for ~3 min)
#   make rehearse   the standard rehearsal against a fresh local gateway
#   make install    build, then install into PREFIX (/usr/local; DESTDIR respected):
#                   bin/, share/doc/flashgate, lib/systemd/system
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
# ctest slots for the unit and integration labels: twice the cores. Those tests
# mostly wait (timers, Kafka group joins, servers starting; the dev stage's
# integration run kept 2 cores ~33% busy at -j2). A test that keeps a core busy
# takes two slots (PROCESSORS 2 in tests/CMakeLists.txt), so it shares the
# machine with no more load than it did at -j$(JOBS).
TEST_JOBS ?= $(shell echo $$(( $(JOBS) * 2 )))
# The dev stage at -j4 on 2 cores kept its slots full while the cores were ~68%
# busy (user+sys of `make test-dev` over its wall time), so it runs one slot more.
DEV_TEST_JOBS ?= $(shell echo $$(( $(JOBS) * 5 / 2 )))
# The ASan stage is bound by its slots as well: its eleven longest tests, each
# run alone, used 0.36 of a core per second of CI time (user+sys of
# `/usr/bin/time ctest -R '^NAME$$'` in build-asan), so 5 slots keep about 1.8
# cores busy. CI's per-test times replayed through ctest's scheduler
# (`python3 tests/ctest_replay.py build-asan LOG -j4`, then -j5, LOG the output
# of make test) take 443 s at -j4 and 376 s at -j5.
ASAN_TEST_JOBS ?= $(DEV_TEST_JOBS)
CMAKE_FLAGS ?=
# cmake --build runs make recursively: without this, each level prints its
# "Entering/Leaving directory" lines (about 300 before the first useful one).
MAKEFLAGS += --no-print-directory

PREFIX ?= /usr/local

.PHONY: all build install run test test-dev test-dev-ctest test-asan test-tsan fuzz bench bench-overload bench-overload-smoke soak-asan rehearse clean \
	mutation sim sim-plants

all: build

build:
	@cmake -S . -B build -DFLASHGATE_WERROR=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build build -j$(JOBS)

install: build
	@DESTDIR="$(DESTDIR)" cmake --install build --prefix "$(PREFIX)"

run: build
	@sh deploy/quickstart.sh

rehearse: build
	@FLASHGATE_BIN=$(CURDIR)/build sh loadtest/rehearse.sh

define dev_build
	@cmake -S . -B build -DFLASHGATE_WERROR=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build build -j$(JOBS)
endef

# The lint stage runs beside the others (tests/lint/beside.sh), at the idle
# scheduling class, on the CPU time their waiting tests leave unused, once the
# dev build it reads (compile_commands.json, generated headers) is there.
# test-dev-ctest is the dev stage's ctest run on that build: configuring and
# building the built tree again does nothing but still costs 22 s of CPU on the
# loaded 2-core box (`/usr/bin/time sh -c 'cmake -S . -B build >/dev/null &&
# cmake --build build -j2'`).
test:
	$(dev_build)
	@sh tests/lint/beside.sh build $(MAKE) test-dev-ctest test-asan test-tsan fuzz
	@echo "all test stages passed"

test-dev:
	$(dev_build)
	@$(MAKE) test-dev-ctest

test-dev-ctest:
	@cd build && ctest -L 'unit|integration|sim|race' --output-on-failure -j$(DEV_TEST_JOBS)

test-asan:
	@cmake -S . -B build-asan -DFLASHGATE_WERROR=ON -DFLASHGATE_SANITIZER=address,undefined \
		-DCMAKE_BUILD_TYPE=Debug $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-asan -j$(JOBS)
	@cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest -L 'unit|integration|sim' --output-on-failure -j$(ASAN_TEST_JOBS)

# TEST_JOBS slots as the other stages: most of the concurrency label is the
# integration tests' gateways, which wait under TSan too (its eight longest
# tests, alone, used half a core per second of CI time, measured as for ASan
# above; the ones that use more take two slots, tests/CMakeLists.txt). The replay
# takes 102 s at -j2 and 68 s at -j4.
test-tsan:
	@cmake -S . -B build-tsan -DFLASHGATE_WERROR=ON -DFLASHGATE_SANITIZER=thread \
		-DCMAKE_BUILD_TYPE=Debug $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-tsan -j$(JOBS) --target concurrency-bins
	@cd build-tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(CURDIR)/tests/tsan.supp \
		ctest -L concurrency --output-on-failure -j$(TEST_JOBS)

lint:
	@cmake -S . -B build -DFLASHGATE_WERROR=ON $(CMAKE_FLAGS) >/dev/null
	@sh tests/lint/run.sh build

# Ten minutes at steady mixed load, sampled and plotted (build/soak/soak.png).
soak: build
	@FLASHGATE_BIN=$(CURDIR)/build python3 tests/fault/soak.py

# A short soak under LeakSanitizer (outside make test, as every soak): the ASan
# build of test-asan, 30 s of steady load, and no leak at the stop.
soak-asan:
	@cmake -S . -B build-asan -DFLASHGATE_WERROR=ON -DFLASHGATE_SANITIZER=address,undefined \
		-DCMAKE_BUILD_TYPE=Debug $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-asan -j$(JOBS)
	@ASAN_OPTIONS=detect_leaks=1 FLASHGATE_BIN=$(CURDIR)/build-asan \
		python3 tests/fault/soak.py --duration 30 --interval 5 --rate 150 --asan

# The overload benchmark's smoke pass (ctest label bench; outside make test, as the
# overload bench itself): the benchmark still runs and prints its tables.
bench-overload-smoke: build
	@cd build && ctest -L bench --output-on-failure

# The fault scenarios (also part of the integration stage) as one table.
# The deterministic simulation (docs/simulation.md): make sim SEEDS=N or MINUTES=M.
SEEDS ?= 1000
sim: build
	@if [ -n "$(MINUTES)" ]; then ./build/flashgate-sim --minutes $(MINUTES); \
	 else ./build/flashgate-sim --seeds $(SEEDS) --seed $${SEED:-1}; fi

# The simulator's self-test: each planted bug found within its budget of seeds.
sim-plants:
	@cmake -S . -B build-plants -DFLASHGATE_WERROR=ON -DFLASHGATE_PLANTS=ON >/dev/null
	@cmake --build build-plants -j$(JOBS) --target flashgate-sim
	@cd build-plants && ctest -L sim --output-on-failure -j$(TEST_JOBS)

faults: build
	@bash tests/fault/run.sh build

# The suite's teeth: every planted bug must make a test fail (tests/mutation/run.sh).
mutation:
	@JOBS=$(JOBS) bash tests/mutation/run.sh $(MUTANTS)

fuzz:
	@CC=clang cmake -S . -B build-fuzz -DFLASHGATE_WERROR=ON -DFLASHGATE_FUZZ=ON \
		-DFLASHGATE_SANITIZER=address,undefined -DCMAKE_BUILD_TYPE=Debug $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-fuzz -j$(JOBS) --target fuzz-targets
	@sh tests/fuzz/run.sh build-fuzz

bench: build
	@sh bench/bench.sh

bench-overload: build
	@sh bench/overload.sh $(BENCH_OVERLOAD_FLAGS)

clean:
	rm -rf build build-asan build-tsan build-fuzz
