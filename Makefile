# make demo / make test work on a fresh machine: they install into .venv first when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast format lint bench measure clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/kt demo

# pytest exits 5 when it collects no test: that fails the target, as it should. make test is the whole
# suite (what CI runs); make test-fast the inner loop, without the tests marked slow or network. Both run
# one process per core (pytest-xdist, at most 4), each test file's tests in one process, so the fixtures
# a file trains once are trained once.
XDIST := -n auto --maxprocesses 4 --dist loadfile
test: install
	$(BIN)/python -m pytest -q $(XDIST)

test-fast: install
	$(BIN)/python -m pytest -q $(XDIST) -m "not slow and not network"

format: install
	$(BIN)/ruff format kaggle_transfer

lint: install
	$(BIN)/ruff check kaggle_transfer tests benchmarks

# speed, each as a ratio against the usual alternative measured in the same run, wall and CPU time (about
# 14 minutes on 2 cores, 19 with TIMM_TRAIN=path/to/pytorch-image-models/train.py, which adds kt train vs
# timm's train.py: from kt prepare's cache, and compute-bound from small JPEGs without it).
TIMM_TRAIN ?=
bench: install
	cd benchmarks && ../$(BIN)/python prepare_vs_pil.py
	cd benchmarks && ../$(BIN)/python decoders.py
	cd benchmarks && ../$(BIN)/python cache_formats.py
	cd benchmarks && ../$(BIN)/python loader_speed.py
	@if [ -n "$(TIMM_TRAIN)" ]; then cd benchmarks && ../$(BIN)/python train_vs_timm.py --timm-train "$(abspath $(TIMM_TRAIN))" \
	&& ../$(BIN)/python train_vs_timm.py --timm-train "$(abspath $(TIMM_TRAIN))" --no-cache --source 800x600 \
	--images 400 --size 128 --trials 3; \
	else echo "kt train vs timm's train.py skipped: pass TIMM_TRAIN=path/to/pytorch-image-models/train.py"; fi
	cd benchmarks && ../$(BIN)/python channels_last.py
	cd benchmarks && ../$(BIN)/python onnx_vs_torch.py
	cd benchmarks && ../$(BIN)/python predict_speed.py
	cd benchmarks && ../$(BIN)/python notebook_predictor.py
	cd benchmarks && ../$(BIN)/python budget_accuracy.py

# learning quality: interventions over seeds, real digits over seeds, the winners' toolbox (about 20 minutes)
measure: install
	$(BIN)/python benchmarks/interventions.py
	$(BIN)/python benchmarks/digits_accuracy.py
	$(BIN)/python benchmarks/winners.py

clean:
	rm -rf demo .pytest_cache build *.egg-info
