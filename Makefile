VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml .ci/install.sh
	bash .ci/install.sh
	touch $(STAMP)

install: $(STAMP)

# The whole pipeline on the built-in digits dataset: init, run, fit, eval, report.
demo: $(STAMP)
	$(VENV)/bin/datamodels demo --spec jobs/digits.toml --out runs/digits

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) analysis/bench_trainer.py
	$(PY) analysis/bench_regression.py

clean:
	rm -rf runs .pytest_cache
