# Thin wrapper over CMake for the README's two commands and CI.
#   make            build (RelWithDebInfo) into build/
#   make run        build, start flashgate + flashgate-settle on the embedded
#                   defaults, rehearse a sale with flashgate-load, keep serving
#   make test       the whole suite: dev build (-Werror) unit + integration + race
#                   (Helgrind on the relay and settlement),
#                   ASan+UBSan unit + integration, TSan concurrency tests,
#                   libFuzzer targets for a bounded time (make fuzz)
#   make fuzz       clang + libFuzzer + ASan/UBSan build in build-fuzz/, each
#                   target FUZZ_SECONDS (10) plus every committed reproducer
#   make bench      benchmarks (bench/bench.sh), printed side by side
#   make bench-overload  the overload benchmark (bench/overload.sh, < 10 min;
#                   BENCH_OVERLOAD_FLAGS=--quick for ~3 min)
#   make rehearse   the standard rehearsal against a fresh local gateway
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=

.PHONY: all build run test test-dev test-asan test-tsan fuzz bench bench-overload rehearse clean

all: build

build:
	@cmake -S . -B build -DFLASHGATE_WERROR=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build build -j$(JOBS)

run: build
	@sh deploy/quickstart.sh

rehearse: build
	@FLASHGATE_BIN=$(CURDIR)/build sh loadtest/rehearse.sh

test: test-dev test-asan test-tsan fuzz
	@echo "all test stages passed"

test-dev:
	@cmake -S . -B build -DFLASHGATE_WERROR=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build build -j$(JOBS)
	@cd build && ctest -L unit --output-on-failure -j$(JOBS)
	@cd build && ctest -L integration --output-on-failure
	@cd build && ctest -L race --output-on-failure

test-asan:
	@cmake -S . -B build-asan -DFLASHGATE_WERROR=ON -DFLASHGATE_SANITIZER=address,undefined \
		-DCMAKE_BUILD_TYPE=Debug $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-asan -j$(JOBS)
	@cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest -L 'unit|integration' --output-on-failure -j$(JOBS)

test-tsan:
	@cmake -S . -B build-tsan -DFLASHGATE_WERROR=ON -DFLASHGATE_SANITIZER=thread \
		-DCMAKE_BUILD_TYPE=Debug $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-tsan -j$(JOBS)
	@cd build-tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
		ctest -L concurrency --output-on-failure -j$(JOBS)

fuzz:
	@CC=clang cmake -S . -B build-fuzz -DFLASHGATE_WERROR=ON -DFLASHGATE_FUZZ=ON \
		-DFLASHGATE_SANITIZER=address,undefined -DCMAKE_BUILD_TYPE=Debug $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-fuzz -j$(JOBS)
	@sh tests/fuzz/run.sh build-fuzz

bench: build
	@sh bench/bench.sh

bench-overload: build
	@sh bench/overload.sh $(BENCH_OVERLOAD_FLAGS)

clean:
	rm -rf build build-asan build-tsan build-fuzz
