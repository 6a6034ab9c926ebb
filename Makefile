# One-command set-up: `make demo` and `make test` create .venv and install everything.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torchsort compiles a CUDA extension whenever `nvcc` is on PATH; that fails to link on
# machines with nvcc but no CUDA runtime, so build it CPU-only unless TORCHSORT_CUDA=1.
ifeq ($(TORCHSORT_CUDA),1)
BUILD_PATH := $(PATH)
else
BUILD_PATH := $(shell echo "$$PATH" | tr ':' '\n' | while read -r d; do [ -x "$$d/nvcc" ] || printf '%s:' "$$d"; done)
endif

# numpy's OpenBLAS threads slow the many small matrix products of the data tools ~10x on
# small machines (BENCHMARKS.md); torch keeps its own intra-op threads.
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: install test demo sanity lint bench clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet setuptools wheel
	PATH="$(BUILD_PATH)" $(PY) -m pip install --quiet --no-build-isolation -r requirements.txt
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $(STAMP)

# The suite runs TEST_JOBS test files side by side (pytest-xdist; a file stays in one process, so
# its module fixtures are built once); TEST_JOBS=0 runs it in this process.
TEST_JOBS ?= 2
test: install
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

demo: install
	$(PY) tools/demo.py

# Memorisation check (tools/sanity_check.py) of each config, teacher and student of both model
# types, SANITY_JOBS at a time with an equal share of the cores (on 2 cores two one-thread
# trainings side by side make more steps than one two-thread training; BENCHMARKS.md). Each
# check's output goes to outputs/sanity/<config>.log and its verdict line is printed; the target
# fails if any check recovers < 90 % of its Moderate cars.
SANITY_CONFIGS ?= configs/sanity/did_teacher.yaml configs/sanity/did_student.yaml \
	configs/sanity/gupnet_teacher.yaml configs/sanity/gupnet_student.yaml
SANITY_JOBS ?= 2
# The synthetic frames' seed (`make sanity SANITY_SEED=2`): the configs must memorise any seed's frames.
SANITY_SEED ?= 0
sanity: install
	$(PY) tools/sanity_check.py --overwrite --seed $(SANITY_SEED) --jobs $(SANITY_JOBS) \
		$(foreach c,$(SANITY_CONFIGS),--config $(c))

bench: install
	$(PY) benchmarks/bench_eval.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
