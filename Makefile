VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test house bench clean

$(STAMP): pyproject.toml .ci/install.sh
	bash .ci/install.sh
	touch $(STAMP)

install: $(STAMP)

# The whole pipeline on the built-in digits dataset: init, run, fit, eval, report.
demo: $(STAMP)
	$(VENV)/bin/datamodels demo --out runs/digits

test: $(STAMP)
	$(PY) -m pytest -q

# The house's checks alone: no import circle, each module imports alone, the wheel
# installs into a fresh environment and runs the demo elsewhere, golden seeds, atomic writes.
house: $(STAMP)
	$(PY) -m pytest -q tests/test_imports.py tests/test_packaging.py tests/test_seeds.py tests/test_io.py

bench: $(STAMP)
	$(PY) analysis/bench_trainer.py
	$(PY) analysis/bench_regression.py

clean:
	rm -rf runs .pytest_cache
