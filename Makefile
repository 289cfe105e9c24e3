# make demo / make test work on a fresh machine: they install into .venv first when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test lint bench measure clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/kt demo

# pytest exits 5 when it collects no test: that fails the target, as it should.
test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check kaggle_transfer tests benchmarks

# speed, each as a ratio against the usual alternative measured in the same run (a few minutes)
bench: install
	$(BIN)/python benchmarks/prepare_vs_pil.py
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/channels_last.py
	$(BIN)/python benchmarks/onnx_vs_torch.py
	$(BIN)/python benchmarks/predict_speed.py

# learning quality: interventions over seeds, real digits over seeds, the winners' toolbox (about 20 minutes)
measure: install
	$(BIN)/python benchmarks/interventions.py
	$(BIN)/python benchmarks/digits_accuracy.py
	$(BIN)/python benchmarks/winners.py

clean:
	rm -rf demo .pytest_cache build *.egg-info
