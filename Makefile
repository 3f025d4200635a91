# anetrain — build with `make`; `make test` runs the suite; `make sanitize` runs it under
# ASan+UBSan; `make bench` prints throughput figures. Works with CC=gcc or CC=clang.

CC      ?= cc
UNAME   := $(shell uname -s)
ARCH    := $(shell uname -m)
BUILD   ?= build

WARN    := -Wall -Wextra -Wshadow -Wno-unused-parameter
OPT     ?= -O2
ifeq ($(ARCH),x86_64)
ARCH_FLAGS ?= -march=native
endif
CFLAGS  ?= $(OPT) $(ARCH_FLAGS) -g
CFLAGS  += -std=c11 -D_GNU_SOURCE $(WARN) -pthread -MMD -MP
LDLIBS  := -lm -pthread

ifeq ($(UNAME),Darwin)
  LDLIBS += -framework Accelerate
else
  BLAS_CFLAGS := $(shell pkg-config --cflags openblas 2>/dev/null)
  BLAS_LIBS   := $(shell pkg-config --libs openblas 2>/dev/null || echo -lopenblas)
  CFLAGS += $(BLAS_CFLAGS)
  LDLIBS += $(BLAS_LIBS)
endif
LDLIBS += -lcjson

LIB_SRC  := $(filter-out src/main.c,$(shell find src -name '*.c' | sort))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(sort $(wildcard tests/test_*.c))
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
# The ops compiled a second time in double precision, for the finite-difference tests.
OPS64_OBJ := $(BUILD)/src/ops/ops64.o

.PHONY: all test sanitize bench clean
all: $(BUILD)/anetrain

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

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

# The whole suite: C unit tests, PyTorch parity, CLI end-to-end. See tests/run.sh.
test: $(BUILD)/anetrain $(TEST_BIN)
	BUILD=$(BUILD) sh tests/run.sh

sanitize:
	$(MAKE) BUILD=build-san OPT=-O1 ARCH_FLAGS= \
	  CFLAGS_EXTRA= CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  LDFLAGS_SAN="-fsanitize=address,undefined" test

bench: $(BUILD)/anetrain $(BUILD)/bench/bench_train
	sh bench/run.sh $(BUILD)

$(BUILD)/bench/%: bench/%.c $(BUILD)/libanetrain.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Isrc $< $(BUILD)/libanetrain.a -o $@ $(LDLIBS)

clean:
	rm -rf build build-san

-include $(LIB_OBJ:.o=.d) $(BUILD)/src/main.d
