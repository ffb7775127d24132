# promptlake developer commands. Everything runs inside ./.venv, which `make install` builds.
VENV ?= .venv
PY := $(VENV)/bin/python
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install test lint format demo ui bench-fetch bench-embed bench-search bench-refine bench-ui \
	bench-turns bench-folder bench-pipeline bench-noop clean distclean

install: $(VENV)/.installed

# torch first, pinned to the local CPU build, so the project's torch>= pin installs nothing more;
# the diffusers extra too, so the tests run the diffusers generator
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,diffusers]'
	touch $@

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# the type checker and the import contracts (pyproject.toml) read promptlake/, whose flows, tasks,
# storage and deployments are links to the top-level folders: promptlake.tasks… resolves as plain
# files, for every tool, with no install hook
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# img2dataset gets its own virtualenv: it pins a `dataclasses` backport that breaks pydantic
.venv-bench/.installed:
	python3 -m venv .venv-bench
	.venv-bench/bin/pip install -q img2dataset
	touch $@

bench-fetch: install .venv-bench/.installed
	NO_ALBUMENTATIONS_UPDATE=1 $(PY) benchmarks/fetch.py $(BENCH_ARGS)

# the main job on a sample dataset made here: ingest, searches, refine, feedback (offline-safe)
demo: install
	$(PY) -m promptlake.demo $(DEMO_ARGS)

# the search page on a data dir (default: the one `make demo` builds), CLIP loaded once; while
# it runs, `promptlake search` and `refine` on the same data dir ask it (about a second each)
DATA_DIR ?= demo/data
ui: install
	$(VENV)/bin/promptlake ui --data-dir $(DATA_DIR) $(UI_ARGS)

# what runs leave behind; the virtualenvs (several GB, slow to rebuild) stay
clean:
	rm -rf demo .pytest_cache .ruff_cache .mypy_cache

# everything: also the virtualenvs that `make install` and bench-fetch build
distclean: clean
	rm -rf $(VENV) .venv-bench

bench-embed: install
	$(PY) benchmarks/embed.py $(BENCH_ARGS)

# a folder of generated images: first scan, and rescans of it unchanged and 1% grown
bench-folder: install
	$(PY) benchmarks/folder.py $(BENCH_ARGS)

# what recording a shard's outputs in its marker and checking them costs, against writing them
.PHONY: bench-markers
bench-markers: install
	$(PY) benchmarks/markers.py $(BENCH_ARGS)

bench-refine: install
	$(PY) benchmarks/refine.py $(BENCH_ARGS)

bench-search: install
	$(PY) benchmarks/search.py $(BENCH_ARGS)

# the search page: warm searches over HTTP against a cold CLI search (100k rows, tiny CLIP)
bench-ui: install
	$(PY) benchmarks/ui.py $(BENCH_ARGS)

# processes taking turns with the embedded store: open cost, concurrent searches, during a load
bench-turns: install
	$(PY) benchmarks/turns.py $(BENCH_ARGS)

# the whole `promptlake ingest` on N generated rows (default 100k, after a baseline of N/5): stage
# rates, orchestration overhead, memory per process, disk, status and searches
bench-pipeline: install
	$(PY) benchmarks/pipeline.py $(BENCH_ARGS)

# a rerun with nothing new (300 finished shards) against an empty run, in the same invocation
bench-noop: install
	$(PY) benchmarks/noop.py $(BENCH_ARGS)
