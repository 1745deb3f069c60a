# Makefile - builds momentd (one binary), its tests and benchmarks.
#
#   make            build ./momentd (CUDA backend too when nvcc is found)
#   make test       the layering check, unit tests, then end-to-end tests against the real daemon
#   make asan       build and run the unit tests with AddressSanitizer + UBSan (build-asan/)
#   make CUDA=0     force a CPU-only build
#   make clean

CC      ?= cc
OPT     ?= -O2 -g
CFLAGS  += $(OPT) -std=c11 -Wall -Wextra -Werror -MMD -MP -pthread
PKGS    := libmicrohttpd libavformat libavcodec libavutil libswscale libcjson sqlite3 openblas
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   := $(shell pkg-config --libs $(PKGS))
LDLIBS  += $(PKG_LIBS) -lm -pthread

BUILD   ?= build
BIN     ?= momentd

# CUDA ?= auto: use nvcc from PATH or CUDA's standard location when present.
CUDA ?= auto
ifeq ($(CUDA),auto)
  NVCC := $(shell command -v nvcc 2>/dev/null || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })
else ifeq ($(CUDA),0)
  NVCC :=
else
  NVCC := $(shell command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)
endif

BASE_SRC   := base/status.c base/log.c base/half.c base/image.c base/utf8.c
ENGINE_SRC := engine/engine.c engine/limits.c engine/sha256.c engine/files.c engine/store.c engine/store_sqlite.c engine/library.c engine/jobs.c engine/uploads.c engine/archive.c engine/videos.c engine/backend_cpu.c engine/safetensors.c engine/search.c engine/search_kernels.c engine/moments.c engine/tokenizer.c engine/tokenizer_load.c engine/clip.c engine/clip_load.c engine/demo_model.c engine/model.c engine/query.c engine/pipeline.c engine/mamba.c engine/temporal.c
VIDEO_SRC  := video/probe.c video/decode.c video/isolate.c video/worker.c
SERVER_SRC := server/config.c server/http.c server/errors.c server/handlers.c
CLI_SRC    := cli/embed.c cli/temporal.c
MAIN_SRC   := server/main.c
LIB_SRC    := $(BASE_SRC) $(ENGINE_SRC) $(VIDEO_SRC) $(SERVER_SRC) $(CLI_SRC)

ifneq ($(NVCC),)
  CUDA_HOME  := $(patsubst %/bin/nvcc,%,$(NVCC))
  CUDA_SRC   := $(wildcard cuda/*.cu)
  CUDA_OBJ   := $(CUDA_SRC:%.cu=$(BUILD)/%.o)
  CFLAGS     += -DMD_HAVE_CUDA
  # Machine code for sm_80 (A100; runs on sm_86/89 too) and sm_90 (H100/H200), PTX for newer GPUs.
  NVCCFLAGS  ?= -O2 -std=c++17 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
                -gencode arch=compute_90,code=compute_90 -lineinfo \
                -Xcompiler -Wall,-Wextra,-Werror -Werror all-warnings -DMD_CUDA_HOME='"$(CUDA_HOME)"'
  # Static cudart: the binary runs (and falls back to the CPU) where no CUDA runtime is installed.
  LDLIBS     += -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lstdc++
  BUILD_KIND := CPU + CUDA ($(NVCC))
else
  BUILD_KIND := CPU only$(if $(filter 0,$(CUDA)), (CUDA=0), (nvcc not found))
endif

OBJ      := $(LIB_SRC:%.c=$(BUILD)/%.o) $(BUILD)/embedded.o
MAIN_OBJ := $(MAIN_SRC:%.c=$(BUILD)/%.o)
SCHEMA   := $(sort $(wildcard schema/[0-9][0-9][0-9]-*.sql))

UNIT_TESTS := test_base test_core test_server test_video test_safetensors test_search test_tokenizer test_clip test_decode test_isolate test_mamba test_backend_ops
UNIT_BINS  := $(UNIT_TESTS:%=$(BUILD)/tests/%)

.PHONY: all test unit e2e e2e-asan asan clean build-info check-layers
all: build-info $(BIN)

build-info:
	@echo "momentd build: $(BUILD_KIND)"

$(BIN): $(OBJ) $(MAIN_OBJ) $(CUDA_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -c -o $@ $<

$(BUILD)/%.o: %.cu engine/backend.h base/status.h $(wildcard cuda/*.h)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c -o $@ $<

$(BUILD)/embedded.c: tools/embed.sh server/openapi.json $(SCHEMA)
	@mkdir -p $(BUILD)
	sh tools/embed.sh $@ server/openapi.json $(SCHEMA)

$(BUILD)/embedded.o: $(BUILD)/embedded.c
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(OBJ) $(CUDA_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -o $@ $(filter %.c %.o,$^) $(LDLIBS)

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; ./$$t; done

e2e: $(BIN)
	bash tests/e2e/run.sh ./$(BIN)

# The whole suite: unit tests, the end-to-end tests against the real daemon, then both again
# with AddressSanitizer + UBSan (the e2e run checks every daemon log for sanitizer reports).
test: check-layers fuzz-regress deploy-check all unit e2e asan e2e-asan

# The systemd units' sandbox (systemd-analyze security, offline): tests/deploy/check-units.sh.
.PHONY: deploy-check
deploy-check:
	bash tests/deploy/check-units.sh

# Fails when an #include crosses a layer the wrong way (server -> engine -> {storage, video,
# backend} -> base; tools/check-layers.py).
check-layers:
	python3 tools/check-layers.py --self-test
	python3 tools/check-layers.py

e2e-asan: asan
	MD_E2E_SANITIZED=1 bash tests/e2e/run.sh build-asan/momentd

# AddressSanitizer + UBSan build in its own directory; runs the unit tests.
asan:
	$(MAKE) BUILD=build-asan BIN=build-asan/momentd OPT="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer" \
		build-asan/momentd unit

# CLIP benchmark (not a test): momentd vs transformers + PyTorch, fp32, on a random full-size
# ViT-B/32 generated in a temporary directory; needs the reference venv (PYTHON).
PYTHON        ?= /opt/mdref/bin/python
BENCH_THREADS ?= $(shell nproc)
.PHONY: bench-clip
$(BUILD)/bench_clip: tests/bench/bench_clip.c $(OBJ) $(CUDA_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -o $@ $(filter %.c %.o,$^) $(LDLIBS)

bench-clip: $(BUILD)/bench_clip
	$(PYTHON) tests/bench/bench_clip.py --bin $(BUILD)/bench_clip --threads $(BENCH_THREADS)

# Temporal encoder benchmark (not a test; tests/bench/bench_temporal.c): its cost next to the CLIP
# image tower per window of 32 frames at ViT-B/32 sizes, selective-scan throughput, and end-to-end
# indexing at 1 frame/s of a 1080p clip with the time of each stage. Makes, once, under
# $(BENCH_DIR): a random full-size ViT-B/32 (bench_clip.py's make_checkpoint, needs PYTHON) and
# BENCH_VIDEO_SRC scaled to 1920x1080 and looped to 60 s (ffmpeg); without them it times what it can.
BENCH_DIR       ?= $(BUILD)/bench
BENCH_VIDEO_SRC ?= ../shared/media/lion-monkey.mp4
.PHONY: bench bench-temporal
$(BUILD)/bench_temporal: tests/bench/bench_temporal.c $(OBJ) $(CUDA_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -o $@ $(filter %.c %.o,$^) $(LDLIBS)

bench-temporal: $(BUILD)/bench_temporal
	@mkdir -p $(BENCH_DIR)
	@test -f $(BENCH_DIR)/clip-vit-b32/model.safetensors || $(PYTHON) -c "import sys; sys.path.insert(0, 'tests/bench'); \
		import bench_clip; bench_clip.make_checkpoint('$(BENCH_DIR)/clip-vit-b32')" || rm -rf $(BENCH_DIR)/clip-vit-b32
	@test -f $(BENCH_DIR)/clip-1080p.mp4 || ! test -f $(BENCH_VIDEO_SRC) || ffmpeg -v error -y -stream_loop 6 \
		-i $(BENCH_VIDEO_SRC) -t 60 -an -vf scale=1920:1080,setsar=1 -c:v libx264 -preset fast -crf 20 -pix_fmt yuv420p \
		$(BENCH_DIR)/clip-1080p.mp4 || rm -f $(BENCH_DIR)/clip-1080p.mp4
	set --; test -f $(BENCH_DIR)/clip-vit-b32/model.safetensors && set -- --clip $(BENCH_DIR)/clip-vit-b32 && \
		test -f $(BENCH_DIR)/clip-1080p.mp4 && set -- "$$@" --video $(BENCH_DIR)/clip-1080p.mp4; \
		OPENBLAS_NUM_THREADS=$(BENCH_THREADS) ./$(BUILD)/bench_temporal --threads $(BENCH_THREADS) --repeats 5 "$$@"

# Every benchmark.
bench: bench-temporal

# Decode benchmark (not a test; tests/bench/bench_decode.sh): the video module, exact and keyframe
# mode, against the ffmpeg CLI doing the same 1 frame/s, 224x224 job, on real 1080p footage looped
# to 3 min and a 10 min synthetic clip (made once under /tmp/momentd-bench-decode).
.PHONY: bench-decode
$(BUILD)/bench_decode: tests/bench/bench_decode.c $(OBJ) $(CUDA_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -o $@ $(filter %.c %.o,$^) $(LDLIBS)

bench-decode: $(BUILD)/bench_decode
	bash tests/bench/bench_decode.sh $(BUILD)/bench_decode

bench: bench-decode

# Search benchmark (not a test; tests/bench/bench_search.sh): momentd's segment index (int8 first
# pass + exact re-scoring + moments), text encoding and text -> moments over 10k/100k/1M synthetic
# segments, next to FAISS IndexFlatIP on the same vectors and cores; needs PYTHON with faiss-cpu.
BENCH_SEARCH_THREADS ?= 2
.PHONY: bench-search
$(BUILD)/bench_search: tests/bench/bench_search.c $(OBJ) $(CUDA_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -o $@ $(filter %.c %.o,$^) $(LDLIBS)

bench-search: $(BUILD)/bench_search
	PYTHON=$(PYTHON) BENCH_THREADS=$(BENCH_SEARCH_THREADS) bash tests/bench/bench_search.sh $(BUILD)/bench_search

bench: bench-search

# GPU checks and benchmarks (not a test; tests/gpu/run.sh): every CUDA op against the CPU, segment
# embeddings of real clips CUDA vs CPU, CLIP / selective scan / end-to-end benchmarks against
# transformers + PyTorch fp16. Needs a CUDA device; `bash tests/gpu/run.sh --dry-run` runs here
# what can run without one.
.PHONY: gpu-check
$(BUILD)/gpu/gpu_bench: tests/gpu/gpu_bench.c tests/gpu/mamba_dev.h $(OBJ) $(CUDA_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -o $@ $(filter %.c %.o,$^) $(LDLIBS)

gpu-check:
	bash tests/gpu/run.sh

# The CUDA kernels compiled as plain C++ and run on CPU threads (tests/gpu/emu): test_backend_ops's
# CUDA cases against the CPU without a GPU (arithmetic and indexing; not timing, not cuBLAS).
CXX      ?= g++
EMU_OBJ  := $(patsubst cuda/%.cu,$(BUILD)/emu/%.o,$(wildcard cuda/kernels_*.cu)) $(BUILD)/emu/emu_backend.o
EMU_FLAGS = -std=c++17 -O1 -g -DMD_CUDA_EMU -Itests/gpu/emu -Wall -Wextra -Werror -Wno-unknown-pragmas -pthread -MMD -MP
.PHONY: gpu-emu
$(BUILD)/emu/%.o: cuda/%.cu
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_FLAGS) -x c++ -c -o $@ $<
$(BUILD)/emu/emu_backend.o: tests/gpu/emu/emu_backend.cc
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_FLAGS) -c -o $@ $<
$(BUILD)/gpu/test_backend_ops_emu: tests/unit/test_backend_ops.c $(OBJ) $(EMU_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -DMD_TEST_EMU -o $@ $(filter %.c %.o,$^) $(LDLIBS) -lstdc++

gpu-emu: $(BUILD)/gpu/test_backend_ops_emu
	./$(BUILD)/gpu/test_backend_ops_emu
	@for o in reverse shuffle; do echo "== MD_EMU_ORDER=$$o"; \
		MD_EMU_ORDER=$$o ./$(BUILD)/gpu/test_backend_ops_emu > $(BUILD)/gpu/emu-$$o.log 2>&1 || \
		{ grep -E "FAIL|emu:" $(BUILD)/gpu/emu-$$o.log | head -n 20; tail -n 1 $(BUILD)/gpu/emu-$$o.log; exit 1; }; \
		tail -n 1 $(BUILD)/gpu/emu-$$o.log; done

# Installs the binary, the example configuration (kept if one is there) and the systemd units.
PREFIX ?= /usr/local
.PHONY: install
install: $(BIN)
	install -D -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/momentd
	test -e $(DESTDIR)/etc/momentd/momentd.conf || install -D -m 644 deploy/momentd.conf $(DESTDIR)/etc/momentd/momentd.conf
	install -D -m 644 deploy/momentd.service $(DESTDIR)/etc/systemd/system/momentd.service
	install -D -m 644 deploy/momentd-gpu.service $(DESTDIR)/etc/systemd/system/momentd-gpu.service

clean:
	rm -rf build build-asan momentd

-include $(shell find $(BUILD) build-asan -name '*.d' 2>/dev/null)

# Fuzzing (tests/fuzz, see its README): libFuzzer targets for the parsers of untrusted input,
# built with clang -fsanitize=fuzzer,address,undefined (UB aborts) into build-fuzz/, CPU only.
#   make fuzz           fuzz each target for FUZZ_SECONDS (new inputs: build-fuzz/corpus/<target>,
#                       crashes: build-fuzz/crashes/<target>/); FUZZ_TARGETS="fuzz_x ..." picks some
#   make fuzz-regress   run each target once over its committed corpus (tests/fuzz/corpus/<target>),
#                       no fuzzing; part of make test
#   make fuzz-corpus    regenerate the seed files of the corpus from the project's own writers
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_BUILD   := build-fuzz
FUZZ_TARGETS ?= fuzz_safetensors fuzz_clip_config fuzz_tokenizer_load fuzz_tokenizer_encode fuzz_temporal \
                fuzz_video_probe fuzz_http
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
# Per target: the longest input libFuzzer makes, and how long one input may take (FFmpeg's demuxers
# and a request through the daemon are slower than the file parsers).
FUZZ_OPTS                       := -timeout=10 -rss_limit_mb=2560
FUZZ_OPTS_fuzz_safetensors      := -max_len=65536
FUZZ_OPTS_fuzz_clip_config      := -max_len=8192
FUZZ_OPTS_fuzz_tokenizer_load   := -max_len=16384
FUZZ_OPTS_fuzz_tokenizer_encode := -max_len=4096
FUZZ_OPTS_fuzz_temporal         := -max_len=65536
FUZZ_OPTS_fuzz_video_probe      := -max_len=32768
FUZZ_OPTS_fuzz_http             := -max_len=8192 -timeout=20
.PHONY: fuzz fuzz-regress fuzz-build fuzz-bins fuzz-check-cc fuzz-one fuzz-corpus

$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_common.h $(OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -fsanitize=fuzzer -o $@ $(filter %.c %.o,$^) $(LDLIBS)

fuzz-bins: $(FUZZ_TARGETS:%=$(BUILD)/fuzz/%)

# A clear failure, not a compiler error, where clang or its libFuzzer runtime is missing.
fuzz-check-cc:
	@command -v $(FUZZ_CC) >/dev/null 2>&1 || { echo "fuzz: '$(FUZZ_CC)' not found: the fuzz targets need clang" \
		"with libFuzzer (Debian: clang libclang-rt-dev; deploy/install-deps.sh --test installs them)"; exit 1; }
	@printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' | \
		$(FUZZ_CC) -fsanitize=fuzzer,address,undefined -x c -o /dev/null - 2>/dev/null || { echo "fuzz: '$(FUZZ_CC)'" \
		"cannot link -fsanitize=fuzzer,address,undefined: not clang, or libFuzzer's runtime is missing (Debian:" \
		"libclang-rt-dev; deploy/install-deps.sh --test installs it)"; exit 1; }

fuzz-build: fuzz-check-cc
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) CUDA=0 \
		OPT="-O1 -g $(FUZZ_SAN) -fsanitize=fuzzer-no-link" FUZZ_TARGETS="$(FUZZ_TARGETS)" fuzz-bins

# Running a libFuzzer binary with files as arguments runs each once and exits non-zero on a crash,
# a sanitizer report or a timeout.
fuzz-regress: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do \
		set -- tests/fuzz/corpus/$$t/*; test -e "$$1" || { echo "fuzz-regress: no corpus in tests/fuzz/corpus/$$t"; exit 1; }; \
		if ./$(FUZZ_BUILD)/fuzz/$$t $(FUZZ_OPTS) "$$@" > $(FUZZ_BUILD)/$$t.regress.log 2>&1; then \
			echo "fuzz-regress: $$t: $$# inputs ok"; \
		else \
			tail -n 40 $(FUZZ_BUILD)/$$t.regress.log; \
			echo "fuzz-regress: $$t FAILED on its corpus (log: $(FUZZ_BUILD)/$$t.regress.log)"; exit 1; \
		fi; \
	done

fuzz: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do $(MAKE) --no-print-directory fuzz-one T=$$t; done

fuzz-one:
	@mkdir -p $(FUZZ_BUILD)/corpus/$(T) $(FUZZ_BUILD)/crashes/$(T)
	@echo "== $(T): $(FUZZ_SECONDS) s"
	./$(FUZZ_BUILD)/fuzz/$(T) $(FUZZ_OPTS) $(FUZZ_OPTS_$(T)) -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		-artifact_prefix=$(FUZZ_BUILD)/crashes/$(T)/ $(FUZZ_BUILD)/corpus/$(T) tests/fuzz/corpus/$(T)

$(BUILD)/fuzz/gen_seeds: tests/fuzz/gen_seeds.c $(OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -o $@ $(filter %.c %.o,$^) $(LDLIBS)

fuzz-corpus: $(BUILD)/fuzz/gen_seeds
	bash tests/fuzz/make-corpus.sh ./$(BUILD)/fuzz/gen_seeds tests/fuzz/corpus
