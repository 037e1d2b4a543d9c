# opso_nb: `make app` serves the dashboards, `make test` runs every test. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8866
# torch/torchvision: these versions install from local wheels on the project's machines;
# elsewhere override, e.g. `make test TORCH_SPEC="torch torchvision"`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: app panel test install chromium bench clean docs

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[all]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (opso_nb)" >/dev/null
	touch $(STAMP)

install: $(STAMP)

# Debian's Chromium for the browser tests (Playwright drives it by path; no browser downloads)
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; \
	fi

app: install
	$(BIN)/python -m opso_nb.apps --server voila --port $(PORT) $(addprefix --data ,$(DATA)) $(if $(OUTPUT),--output $(OUTPUT))

panel: install
	$(BIN)/python -m opso_nb.apps --server panel --port 5006 $(addprefix --data ,$(DATA)) $(if $(OUTPUT),--output $(OUTPUT))

# Unit tests, notebooks (nbval) and dashboards in headless Chromium, 2 workers.
# --dist loadfile keeps each notebook's cells (and each test module) in one worker, in order.
test: install chromium
	MPLBACKEND=Agg $(BIN)/python -m pytest -n 2 --dist loadfile --nbval-lax --nbval-current-env \
		--nbval-cell-timeout=600 --durations=25 tests notebooks $(PYTEST_ARGS)

# Every performance goal in one table (benchmarks/bench_all.py); `make bench BENCH_ARGS=--quick` takes a few minutes.
# OPENSOUNDSCAPE_PYTHON=/path/to/python-with-opensoundscape adds the comparison. Other benchmarks/bench_*.py: by hand.
bench: install
	$(BIN)/python benchmarks/bench_all.py $(BENCH_ARGS)

# The documentation site (executes every tutorial; cached in docs/_build/.jupyter_cache): docs/_build/html/index.html
docs: install
	$(BIN)/python -m sphinx -b html docs docs/_build/html $(SPHINX_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache benchmarks/_data docs/_build docs/api docs/tutorials/*.ipynb
