# toolgate's front door. `make run` starts toolgate; `make test` builds and runs every test.
# Each target installs missing Debian packages first (scripts/install-deps.sh, as root).

BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps configure build run test bench asan tsan fuzz check-layers check-format thread-safety clean format

all: build

deps:
	@bash scripts/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

run: build
	@bash scripts/run.sh $(BUILD_DIR)

test: build
	@ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS)

bench: build
	@bash scripts/bench.sh $(BUILD_DIR)

# The unit tests under AddressSanitizer + UndefinedBehaviorSanitizer (clang, the libraries at -O1 with
# assertions on, as libFuzzer builds: the same tree builds the fuzz targets, and `make fuzz
# FUZZ_DIR=build-asan` then reuses it), and under ThreadSanitizer (g++). A build-asan configured
# otherwise before (by g++) is set up again from scratch.
asan:
	@if [ -f build-asan/CMakeCache.txt ] && ! grep -qs "^TOOLGATE_BUILD_FUZZERS:BOOL=ON" build-asan/CMakeCache.txt; then \
	  rm -rf build-asan; fi
	@CC=clang CXX=clang++ $(MAKE) --no-print-directory test BUILD_DIR=build-asan BUILD_TYPE=Debug \
	  CMAKE_FLAGS="-DCMAKE_CXX_FLAGS_DEBUG=-O1 -DTOOLGATE_SANITIZE=address,undefined -DTOOLGATE_BUILD_FUZZERS=ON -DTOOLGATE_BUILD_BENCHMARKS=OFF"

tsan:
	@$(MAKE) --no-print-directory test BUILD_DIR=build-tsan BUILD_TYPE=RelWithDebInfo \
	  CMAKE_FLAGS="-DTOOLGATE_SANITIZE=thread -DTOOLGATE_BUILD_BENCHMARKS=OFF"

# The libFuzzer targets (clang, ASan + UBSan), each for FUZZ_SECONDS (default 30) from its seed corpus,
# built in FUZZ_DIR (default build-fuzz, at -O1; build-asan after `make asan`).
FUZZ_DIR ?= build-fuzz
fuzz: deps
	@BUILD_DIR=$(FUZZ_DIR) bash scripts/fuzz.sh

# Fails when a file includes a header of a higher layer (or the domain an I/O header): the table
# of layers is at the top of scripts/check-layers.sh.
check-layers:
	@bash scripts/check-layers.sh

# clang's thread-safety analysis of every file as errors (ABSL_GUARDED_BY and friends; g++ ignores
# them). Compile only, in build-tsa: nothing is linked or run.
thread-safety: deps
	@bash scripts/thread-safety.sh

# Fails when a C++ file is not formatted as .clang-format says; `make format` fixes them in place.
check-format:
	@bash scripts/check-format.sh

format:
	@clang-format -i $$(git ls-files '*.h' '*.cc' ':!:tests/node/*')

clean:
	@rm -rf build build-asan build-tsan build-fuzz build-tsa
