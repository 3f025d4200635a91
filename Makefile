# anetrain — build with `make`; `make test` runs the suite; `make sanitize` runs it under
# ASan+UBSan; `make bench` prints throughput figures. Works with CC=gcc or CC=clang.

CC      ?= cc
UNAME   := $(shell uname -s)
ARCH    := $(shell uname -m)
BUILD   ?= build

WARN    := -Wall -Wextra -Wshadow -Wno-unused-parameter
OPT     ?= -O3
ifeq ($(ARCH),x86_64)
ARCH_FLAGS ?= -march=native
endif
# EXTRA_CFLAGS adds flags (sanitizers, -DNDEBUG, ...) without replacing the required ones.
EXTRA_CFLAGS ?=
# -fno-math-errno lets sqrtf and friends inline and vectorize, -fno-trapping-math lets loops
# with float comparisons (clamps, selects) vectorize; neither changes any result.
# FEATURES: the POSIX/GNU feature macros. `make strict` builds with strict POSIX C11 and
# -pedantic (no _GNU_SOURCE), a proxy on Linux for what macOS's libc offers.
FEATURES ?= -D_GNU_SOURCE
CFLAGS  := $(OPT) $(ARCH_FLAGS) -fno-math-errno -fno-trapping-math -g -std=c11 $(FEATURES) $(WARN) -pthread -MMD -MP $(EXTRA_CFLAGS)
LDLIBS  := -lm -pthread

ifeq ($(UNAME),Darwin)
  # Accelerate for BLAS; the rest for the ANE bridge (src/backend/ane/darwin.c)
  LDLIBS += -framework Accelerate -framework CoreFoundation -framework IOSurface -framework Foundation -lobjc
  # Homebrew's cjson, pcre2 and utf8proc
  BREW_PREFIX := $(shell brew --prefix 2>/dev/null)
  ifneq ($(BREW_PREFIX),)
    CFLAGS += -I$(BREW_PREFIX)/include
    LDLIBS += -L$(BREW_PREFIX)/lib
  endif
else
  BLAS_CFLAGS := $(shell pkg-config --cflags openblas 2>/dev/null)
  BLAS_LIBS   := $(shell pkg-config --libs openblas 2>/dev/null || echo -lopenblas)
  CFLAGS += $(BLAS_CFLAGS)
  LDLIBS += $(BLAS_LIBS)
endif
LDLIBS += -lcjson -lz -lpcre2-8 -lutf8proc

# MPI for data-parallel runs (src/util/dist.c, the only file that includes mpi.h): found through
# pkg-config (ompi-c, then mpi) or mpicc; MPI=0 builds without it. Without MPI the program is the
# same single process (dist.h's single-process build). Its headers are system headers (-isystem),
# so `make strict` judges our code only.
MPI ?= auto
ifneq ($(MPI),0)
  MPI_PC := $(shell pkg-config --exists ompi-c 2>/dev/null && echo ompi-c || (pkg-config --exists mpi 2>/dev/null && echo mpi))
  ifneq ($(MPI_PC),)
    MPI_CFLAGS := $(shell pkg-config --cflags $(MPI_PC))
    MPI_LIBS   := $(shell pkg-config --libs $(MPI_PC))
  else ifneq ($(shell command -v mpicc 2>/dev/null),)
    MPI_CFLAGS := $(shell mpicc --showme:compile 2>/dev/null)
    MPI_LIBS   := $(shell mpicc --showme:link 2>/dev/null)
  endif
endif
ifneq ($(MPI_LIBS),)
  DIST_CFLAGS := -DANETRAIN_MPI $(patsubst -I%,-isystem %,$(MPI_CFLAGS))
  LDLIBS += $(MPI_LIBS)
endif

LIB_SRC  := $(filter-out src/main.c,$(shell find src -name '*.c' | sort))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(sort $(wildcard tests/test_*.c))
ifeq ($(UNAME),Darwin)
  # The bridge's test double stands in for the real framework: a Linux-only test.
  TEST_SRC := $(filter-out tests/test_darwin_bridge.c,$(TEST_SRC))
endif
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
# The ops compiled a second time in double precision, for the finite-difference tests.
OPS64_OBJ := $(BUILD)/src/ops/ops64.o

.PHONY: all test sanitize strict bench clean fuzz fuzz-build
all: $(BUILD)/anetrain

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/src/util/dist.o: src/util/dist.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DIST_CFLAGS) -c $< -o $@

$(OPS64_OBJ): src/ops/ops.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DOPS_DOUBLE -c $< -o $@

$(BUILD)/libanetrain.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/anetrain: $(BUILD)/src/main.o $(BUILD)/libanetrain.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(BUILD)/libanetrain.a $(OPS64_OBJ) tests/test.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Isrc $< $(OPS64_OBJ) $(BUILD)/libanetrain.a -o $@ $(LDLIBS)

# The int8-constant-kernel experiment (bench/ane_int8/: W8 and W8A8 kernels, one compile per
# matrix group and layer) is not part of the program: its report (bench/int8_report.c) and its
# test (tests/test_ane_int8.c) link it.
ANE_INT8_OBJ := $(BUILD)/bench/ane_int8/int8_model.o $(BUILD)/bench/ane_int8/kernels_int8.o
$(BUILD)/bench/ane_int8/%.o: bench/ane_int8/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Isrc -c $< -o $@
$(BUILD)/tests/test_ane_int8: tests/test_ane_int8.c $(ANE_INT8_OBJ) $(BUILD)/libanetrain.a $(OPS64_OBJ) tests/test.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Isrc -Ibench $< $(ANE_INT8_OBJ) $(OPS64_OBJ) $(BUILD)/libanetrain.a -o $@ $(LDLIBS)
$(BUILD)/bench/int8_report: bench/int8_report.c $(ANE_INT8_OBJ) $(BUILD)/libanetrain.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Isrc -Ibench $< $(ANE_INT8_OBJ) $(BUILD)/libanetrain.a -o $@ $(LDLIBS)

# The whole suite: C unit tests, PyTorch parity, CLI end-to-end. See tests/run.sh.
# The macOS bridge on Linux: darwin.c compiled against the fake framework in tests/fake_ane/,
# which checks every message against docs/ane-facts.md §1 and runs the programs on the emulator.
FAKE_ANE_SRC := $(sort $(wildcard tests/fake_ane/*.c))
FAKE_ANE_DEP := $(FAKE_ANE_SRC) $(wildcard tests/fake_ane/*.h) src/backend/ane/darwin.c src/backend/ane/darwin.h \
                src/backend/ane/objc_shim.h
$(BUILD)/tests/test_darwin_bridge: tests/test_darwin_bridge.c $(FAKE_ANE_DEP) $(BUILD)/libanetrain.a tests/test.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DANE_FAKE_FRAMEWORK -Isrc -Itests $< src/backend/ane/darwin.c $(FAKE_ANE_SRC) \
		$(BUILD)/libanetrain.a -o $@ $(LDLIBS)

# Tools the Python and shell tests drive (tests/tool_*.c), built like the test binaries.
TOOL_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(sort $(wildcard tests/tool_*.c)))

test: $(BUILD)/anetrain $(TEST_BIN) $(TOOL_BIN)
	BUILD=$(BUILD) sh tests/run.sh

SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
sanitize:
	$(MAKE) --no-print-directory BUILD=build-san OPT=-O1 ARCH_FLAGS= EXTRA_CFLAGS="$(SAN_FLAGS)" test

# Everything (library, program, tests, tools) with clang in strict POSIX C11, -pedantic, and
# warnings as errors.
strict:
	$(MAKE) --no-print-directory BUILD=build-strict CC=clang FEATURES="-D_POSIX_C_SOURCE=200809L -pedantic -Werror" \
	  build-strict/anetrain $(TEST_BIN:$(BUILD)/%=build-strict/%) $(TOOL_BIN:$(BUILD)/%=build-strict/%)

# Coverage-guided fuzzing with clang's libFuzzer (Debian: libclang-rt-14-dev, installed by
# scripts/setup.sh): every parser of untrusted input has a harness tests/fuzz/fuzz_<name>.c. The
# library is rebuilt in build-fuzz with coverage instrumentation and ASan+UBSan; tests/fuzz/run.sh
# writes the seed corpora (tests/fuzz/make_seeds.c, with the project's writers), replays every
# input in tests/fuzz/regressions/<name>/, then fuzzes each harness for FUZZ_SECONDS seconds with
# FUZZ_TIMEOUT seconds allowed per input (a hang fails). It ends with "N passed, N failed".
FUZZ_SECONDS ?= 20
FUZZ_TIMEOUT ?= 5
FUZZ_NAMES := $(patsubst tests/fuzz/fuzz_%.c,%,$(sort $(wildcard tests/fuzz/fuzz_*.c)))
FUZZ_SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
fuzz:
	$(MAKE) --no-print-directory BUILD=build-fuzz CC=clang OPT=-O1 ARCH_FLAGS= \
	  EXTRA_CFLAGS="-fsanitize=fuzzer-no-link $(FUZZ_SAN)" fuzz-build
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_TIMEOUT=$(FUZZ_TIMEOUT) sh tests/fuzz/run.sh build-fuzz

fuzz-build: $(FUZZ_NAMES:%=$(BUILD)/fuzz/fuzz_%) $(BUILD)/fuzz/make_seeds

FUZZ_DEP := tests/fuzz/common.c $(wildcard tests/fuzz/*.h) $(BUILD)/libanetrain.a
$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_DEP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fsanitize=fuzzer -Isrc -Itests/fuzz $< tests/fuzz/common.c $(BUILD)/libanetrain.a -o $@ $(LDLIBS)

$(BUILD)/fuzz/make_seeds: tests/fuzz/make_seeds.c $(FUZZ_DEP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Isrc -Itests/fuzz $< $(BUILD)/libanetrain.a -o $@ $(LDLIBS)

bench: $(BUILD)/anetrain $(BUILD)/bench/bench_train $(BUILD)/bench/bench_ane $(BUILD)/bench/bench_allreduce
	sh bench/run.sh $(BUILD)

$(BUILD)/bench/%: bench/%.c $(BUILD)/libanetrain.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Isrc $< $(BUILD)/libanetrain.a -o $@ $(LDLIBS)

clean:
	rm -rf build build-san build-fuzz

-include $(LIB_OBJ:.o=.d) $(BUILD)/src/main.d $(ANE_INT8_OBJ:.o=.d)
