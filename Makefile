# Two commands a newcomer needs (see README):
#   make book   create .venv, install everything, execute every notebook, write _build/html
#   make test   everything that CI runs: unit tests and doctests, notebook checks, nbval,
#               the full book build with -W -n --keep-going, browser tests, the slow training tests
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Our kernel first, ahead of any kernel called python3 in ~/.local/share/jupyter.
export JUPYTER_PATH := $(CURDIR)/$(VENV)/share/jupyter
NOTEBOOKS = $(shell $(BIN)/python scripts/toc.py notebooks)
JB_FLAGS := -W -n --keep-going

.PHONY: install book book-nosolutions pdf pdf-nosolutions test test-unit test-notebooks test-build \
        test-pdf test-browser test-slow test-assignments assignments serve lint strip sync-repo-url \
        test-lane-book test-lane-code \
        benchmarks clean test-environments serve-nosolutions
# The graded assignments, in the order of the chapters they build on (scripts/build_assignments.py).
ASSIGNMENTS ?= offpolicy_gradient estimators variance weighted_is ppo trpo traces off_policy_evaluation
# A term seed for `make assignments SEED=...`: new hidden-test inputs and expected values.
SEED ?=

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (IS in RL)"
	touch $@

install: $(STAMP)

## The book: executes every notebook (cached in _build/.jupyter_cache) and writes _build/html.
book: $(STAMP)
	$(BIN)/jupyter-book build . $(JB_FLAGS)
	@echo "Open _build/html/index.html, or run 'make serve'."

## The book without the solutions of the chapter exercises, for a course that grades them.
## Shares the execution cache of `make book`: notebooks it has executed are not executed again.
NOSOLUTIONS_HTML := _build/nosolutions/_build/html
book-nosolutions: $(STAMP)
	$(BIN)/python scripts/nosolutions_config.py --cache _build/.jupyter_cache > _build_nosolutions_config.yml
	$(BIN)/jupyter-book build . --config _build_nosolutions_config.yml --path-output _build/nosolutions $(JB_FLAGS)
	rm -f _build_nosolutions_config.yml
	@echo "Open $(NOSOLUTIONS_HTML)/index.html, or run 'make serve-nosolutions'."

## The PDF edition, _build/pdf/book.pdf, from the same executed notebooks as the HTML (the execution
## cache of `make book`); also copied to _build/html/book.pdf, which the preface links to. Needs
## Chromium and poppler-utils (README).
pdf: $(STAMP)
	$(BIN)/python scripts/build_pdf.py

## The PDF without the solutions of the chapter exercises: _build/pdf/book-nosolutions.pdf.
pdf-nosolutions: $(STAMP)
	$(BIN)/python scripts/build_pdf.py --nosolutions

serve:
	$(BIN)/python -m http.server --directory _build/html 8000

serve-nosolutions:
	$(BIN)/python -m http.server --directory $(NOSOLUTIONS_HTML) 8000

## Every test, in two lanes at once (the machine's two cores): the book's (the build, from an empty
## execution cache, then the PDF editions and the browser tests, which read what it built) and the
## code's (the rest, which reads nothing the build writes). Each stage's output is printed in one
## piece when it ends; `make` fails if any stage fails, after both lanes have finished.
test: $(STAMP)
	$(MAKE) --no-print-directory -j2 --output-sync=target test-lane-book test-lane-code

test-lane-book: $(STAMP)
	$(MAKE) --no-print-directory test-build
	$(MAKE) --no-print-directory test-pdf
	$(MAKE) --no-print-directory test-browser

test-lane-code: $(STAMP)
	$(MAKE) --no-print-directory test-unit
	$(MAKE) --no-print-directory test-notebooks
	$(MAKE) --no-print-directory test-slow
	$(MAKE) --no-print-directory test-assignments
	$(MAKE) --no-print-directory test-environments

test-unit: $(STAMP)
	$(BIN)/python scripts/colab_cell.py --check
	$(BIN)/python -m pytest -m "not slow and not browser and not environments" --doctest-modules companion tests \
	  --ignore=tests/test_assignments.py --ignore=tests/test_pdf.py

## nbval on every chapter, run by a kernel of a fresh environment with only what the chapters'
## set-up cell installs over a plain scientific stack (scripts/fresh_env.py; needs the package
## index): the build executes the same chapters in the course's own environment.
FRESH := _build/fresh
test-notebooks: $(STAMP)
	@test -n "$(NOTEBOOKS)" || { echo "no notebooks in _toc.yml"; exit 1; }
	$(BIN)/python scripts/fresh_env.py $(FRESH)
	JUPYTER_PATH=$(CURDIR)/$(FRESH)/kernel/share/jupyter $(BIN)/python -m pytest -p tests.nbval_fresh \
	  --fresh-env $(FRESH) --nbval-lax --nbval-kernel-name is-rl-fresh -n 2 --dist loadfile $(NOTEBOOKS)

test-build: $(STAMP)
	rm -rf _build/.jupyter_cache _build/.doctrees _build/html _build/jupyter_execute _build/nosolutions
	$(BIN)/jupyter-book build . $(JB_FLAGS)
	$(MAKE) --no-print-directory book-nosolutions

## Both PDF editions (two jobs: one prints while the other reads the notebooks), then their tests.
## Runs after test-build, whose HTML build the edition with solutions reuses; the edition without
## solutions reads every notebook afresh from the execution cache that test-build filled.
test-pdf: $(STAMP)
	test -x /usr/bin/chromium || test -n "$$CHROMIUM_PATH" || $(BIN)/python -m playwright install chromium
	rm -rf _build/pdf
	$(MAKE) -j2 pdf pdf-nosolutions
	$(BIN)/python -m pytest tests/test_pdf.py

test-browser: $(STAMP)
	test -x /usr/bin/chromium || test -n "$$CHROMIUM_PATH" || $(BIN)/python -m playwright install chromium
	$(BIN)/python -m pytest -m browser tests/test_browser.py

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -n 2 tests

## The requirements resolve for every supported Python (asks the package index).
test-environments: $(STAMP)
	$(BIN)/python -m pytest -m environments tests --ignore=tests/test_assignments.py

## The graded assignments (book/instructors.md): student notebooks and autograders in
## assignments/dist/<name>/{student,autograder}; SEED=<number> builds a term's private variant.
## Installs the instructor tools.
assignments: $(STAMP)
	$(BIN)/python -m pip install --quiet -r requirements-instructor.txt
	$(BIN)/python scripts/build_assignments.py $(ASSIGNMENTS) $(if $(SEED),--seed $(SEED))

## Proves the grading right: solutions score full marks, untouched notebooks 0, answers that call
## the companion 0, typical mistakes lose exactly their question's points.
test-assignments: $(STAMP)
	$(BIN)/python -m pip install --quiet -r requirements-instructor.txt
	ASSIGNMENTS="$(ASSIGNMENTS)" $(BIN)/python -m pytest tests/test_assignments.py

lint: $(STAMP)
	$(BIN)/ruff check .

## Strip outputs and execution counts from every notebook under book/ (run before committing).
strip: $(STAMP)
	$(BIN)/nbstripout --keep-id book/*.ipynb

## After changing repository.url in _config.yml: rewrite every notebook's set-up cell.
sync-repo-url: $(STAMP)
	$(BIN)/python scripts/colab_cell.py --write

benchmarks: $(STAMP)
	$(BIN)/python -m pip install -r requirements-bench.txt
	$(BIN)/python benchmarks/ope_estimators.py
	$(BIN)/python benchmarks/ppo_cartpole.py
	$(BIN)/python benchmarks/trpo_cartpole.py
	$(BIN)/python benchmarks/ppo_pendulum.py

clean:
	rm -rf _build
