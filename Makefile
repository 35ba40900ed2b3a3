# memseg-lite: every command sets itself up (creates .venv and installs) on first use.
#   make run    the whole workbook end to end on the demo data (CPU-friendly sizes)
#   make test   ruff (make lint, first: it fails fast), package tests, notebooks under nbval, papermill runs,
#               the docs site in a browser (CI sizes)
#   make test-fast  the tests that neither train nor run a notebook (the edit loop, a few minutes)
#   make lint   ruff over the code base
#   make lab    JupyterLab on the workbook
#   make bench  speed / memory benchmarks
#   make docs   the documentation site with the executed notebooks (outputs/site/index.html; make run builds it too; make book is the same)
#   make editions  notebooks/ and solutions/ from instructor/source (edit only the source)
#   make handout   the student zip (outputs/handout.zip: no solutions, instructor files or tests)
#   make handout-assignment  the same with the assignment editions (outputs/handout-assignment.zip)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
INSTALLED := $(VENV)/.installed
DEMO_DATA := data/demo
OUT ?= outputs/workbook
SITE ?= outputs/site
# make run at the demo profile records its run times here (the docs link to this one table)
RUN_TIMES ?= docs/run-times.md
# Tests never touch the network (MEMSEG_OFFLINE=1: no ImageNet download attempt).
# Notebook size profile: full (the paper's sizes), demo (CPU-friendly, make run / make lab), smoke (CI).
PROFILE ?= demo
PYTEST_ARGS ?=
# Tests and the notebooks' kernels run on the CPU on a GPU machine too (bit-exact checks); TEST_DEVICE=cuda tries the GPU.
TEST_DEVICE ?= cpu

.PHONY: help install data run docs book browser test test-fast lint test-package test-notebooks check-notebooks editions handout handout-assignment lab bench clean

help:
	@sed -n '2,12p' Makefile

$(INSTALLED): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit("memseg-lite needs Python 3.11 or newer (found " + sys.version.split()[0] + "); run e.g. make PYTHON=python3.11 ...") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $@

install: $(INSTALLED)

# The demo data is generated (deterministically, in seconds) when missing; the manifest marks a finished set.
$(DEMO_DATA)/manifest.json: $(wildcard memseg_lite/datasets/demo/*.py) | $(INSTALLED)
	$(BIN)/memseg-lite demo-data --out $(DEMO_DATA) --force

data: $(DEMO_DATA)/manifest.json

# The main job is reproducible everywhere: no ImageNet download attempt (MEMSEG_OFFLINE=0 allows it).
MEMSEG_OFFLINE ?= 1
run: $(INSTALLED) data
	MEMSEG_OFFLINE=$(MEMSEG_OFFLINE) MEMSEG_PROFILE=$(PROFILE) $(PY) scripts/run_workbook.py --profile $(PROFILE) --out $(OUT) \
	  $(if $(filter demo,$(PROFILE)),--run-times $(RUN_TIMES),)
	$(PY) scripts/build_docs.py --notebooks $(OUT) --out $(SITE)

# The documentation site (offline: MathJax inside it) with the notebooks the last `make run` executed,
# the stored ones where there is no executed copy.
docs: $(INSTALLED)
	$(PY) scripts/build_docs.py --notebooks $(OUT) --out $(SITE)

book: docs

test: lint test-package check-notebooks test-notebooks

# The edit loop: everything but the tests marked slow (training, notebooks, browsers).
test-fast: $(INSTALLED) data
	MEMSEG_DEVICE=$(TEST_DEVICE) MEMSEG_OFFLINE=1 MEMSEG_PROFILE=smoke $(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check memseg_lite tests scripts benchmarks examples $(RUFF_ARGS)

# The browser tests (tests/test_book.py, tests/test_widget_browser.py) drive Debian's chromium through
# chromedriver. As root they are installed when missing; otherwise (or when apt fails) those tests skip.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium and chromium-driver for the browser tests (apt-get, a minute or two) ..."; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } >/dev/null 2>&1 \
	      || echo "could not install chromium: the browser tests will skip"; \
	  else \
	    echo "no /usr/bin/chromium or /usr/bin/chromedriver and not root: the browser tests will skip"; \
	  fi; \
	fi

test-package: $(INSTALLED) data browser
	MEMSEG_DEVICE=$(TEST_DEVICE) MEMSEG_OFFLINE=1 MEMSEG_PROFILE=smoke $(PY) -m pytest tests $(PYTEST_ARGS)

# Notebooks are stored without outputs; this fails if one was committed with outputs,
# or if an edition is not what its source in instructor/source gives.
check-notebooks: $(INSTALLED)
	$(BIN)/nbstripout --verify notebooks/*.ipynb solutions/*.ipynb assignments/*.ipynb instructor/source/*.ipynb
	$(PY) -m memseg_lite.teaching.editions --check

# The student and solutions editions, generated from the one source per chapter.
editions: $(INSTALLED)
	$(PY) -m memseg_lite.teaching.editions

handout: $(INSTALLED)
	$(BIN)/memseg-lite handout --out outputs/handout.zip

# The same with the assignment editions (students write each chapter's core) in place of the worked ones.
handout-assignment: $(INSTALLED)
	$(PY) -m memseg_lite.teaching.handout --track assignment --out outputs/handout-assignment.zip

test-notebooks: $(INSTALLED) data
	MEMSEG_DEVICE=$(TEST_DEVICE) MEMSEG_OFFLINE=1 MEMSEG_PROFILE=smoke $(PY) -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider notebooks solutions $(PYTEST_ARGS)

# Containers often run as root, which JupyterLab refuses without --allow-root.
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root,)
lab: $(INSTALLED) data
	MEMSEG_PROFILE=$(PROFILE) $(BIN)/jupyter lab $(LAB_ARGS) notebooks

bench: $(INSTALLED)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) outputs runs .pytest_cache
