# The two set-up commands are `make install` and `make test`; everything else builds on them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFUSION := $(BIN)/confusion
OUT ?= outputs

.PHONY: install test test-fast lint demo figures claims bench wheelhouse gpu-check paper-depth paper-width paper-bn-skip clean

install:  ## virtual environment with the package (editable) and the test tools
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[test]'
	$(MAKE) wheelhouse
	@echo "installed: activate with 'source $(VENV)/bin/activate', then run 'confusion --help'"

# pytest-xdist: one worker per core (TEST_JOBS=0 runs the tests in this process, one by one)
TEST_JOBS ?= auto
test:  ## lint and the whole test suite (CPU only, no network), one pytest worker per core
	$(BIN)/ruff check confusion_cli tests
	$(BIN)/pytest -n $(TEST_JOBS) --dist loadgroup

test-fast:  ## lint and the tests not marked slow (3 min on 2 cores shared with a sweep, load 4-6; make test runs all)
	$(BIN)/ruff check confusion_cli tests
	$(BIN)/pytest -m 'not slow' --strict-markers -n $(TEST_JOBS) --dist loadgroup

lint:
	$(BIN)/ruff check confusion_cli tests

demo:  ## a small depth sweep on the bundled digits, offline on a CPU, then its figures
	$(CONFUSION) run +sweep=depth_mnist dataset=digits scale=demo records_root=$(OUT)/demo
	$(CONFUSION) plot $(OUT)/demo

# CIFAR-10 / MNIST when they are in the data folder runs read (confusion_cli.paths.default_data_dir:
# $CONFUSION_DATA, else ./data where it holds datasets, else ~/.cache/confusion/data), else the
# bundled digits (offline CPU); make figures DATA=PATH to look elsewhere
# (asked once, and only by the targets that read it)
DATA ?= $(eval DATA := $(shell $(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,$(PYTHON)) -c \
	'from confusion_cli.paths import default_data_dir; print(default_data_dir())' 2>/dev/null \
	|| echo data))$(DATA)
FIG_CIFAR ?= $(if $(wildcard $(DATA)/cifar-10-batches-py/data_batch_1),cifar10,digits)
FIG_MNIST ?= $(if $(wildcard $(DATA)/MNIST/raw/train-images-idx3-ubyte),mnist,digits)
FIG_FMNIST ?= $(if $(wildcard $(DATA)/FashionMNIST/raw/train-images-idx3-ubyte),fashion_mnist,digits)

figures:  ## smoke versions of every sweep, then every figure the records support
	for s in depth width bn_skip; do \
		$(CONFUSION) run +sweep=$$s scale=smoke dataset=$(FIG_CIFAR) records_root=$(OUT)/figures || exit 1; done
	for s in depth_mnist width_mnist; do \
		$(CONFUSION) run +sweep=$$s scale=smoke dataset=$(FIG_MNIST) records_root=$(OUT)/figures || exit 1; done
	for s in depth_fmnist width_fmnist bn_skip_fmnist; do \
		$(CONFUSION) run +sweep=$$s scale=smoke dataset=$(FIG_FMNIST) records_root=$(OUT)/figures || exit 1; done
	for s in linreg init_depth init_width init_linear lowrank gd_vs_sgd hessian_width; do \
		$(CONFUSION) run +sweep=$$s scale=smoke records_root=$(OUT)/figures || exit 1; done
	$(CONFUSION) plot $(OUT)/figures

claims:  ## every shipped claim decided from the committed records (docs/records) -> docs/claims/
	$(CONFUSION) claims docs/records --out docs/claims

bench:  ## speed and memory ratios against baselines timed in the same run
	$(BIN)/python -m confusion_cli.bench --out $(OUT)/bench

wheelhouse:  ## wheelhouse/: this project's wheel + the pure-Python packages an offline GPU node lacks
	$(BIN)/python -m confusion_cli.wheelhouse --out wheelhouse

# the venv's Python when there is one, else the system's (an offline GPU node: README)
CHECK_PYTHON = $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
gpu-check:  ## the CUDA path on a GPU machine in 8 minutes: pytest -m cuda, a bench, a small timed sweep
	$(CHECK_PYTHON) -m confusion_cli.gpu_check --out $(OUT)/gpu-check

paper-depth:  ## Fig 2 at the paper's scale (hundreds of GPU-hours: use a cluster launcher)
	$(CONFUSION) run +sweep=depth scale=paper
paper-width:
	$(CONFUSION) run +sweep=width scale=paper
paper-bn-skip:
	$(CONFUSION) run +sweep=bn_skip scale=paper

clean:
	rm -rf $(OUT) .pytest_cache .ruff_cache
