# The two commands (README): `make notebooks` runs the main job, `make test` runs the tests.
# Both set everything up on a fresh machine first (a virtual environment in .venv).
PY ?= python3
BIN := .venv/bin
STAMP := .venv/.installed-$(shell cat requirements.txt pyproject.toml | cksum | cut -d' ' -f1)
MODE ?=

.PHONY: setup notebooks test publish export stats benchmark table lab demo clean

setup: $(STAMP)
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv .venv
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	rm -f .venv/.installed-* && touch $@

notebooks: setup  ## execute every notebook headless into runs/<mode>/ with runs/<mode>/SUMMARY.md
	$(BIN)/python scripts/run_notebooks.py $(if $(MODE),--mode $(MODE))

test: setup  ## unit tests + every notebook in smoke mode
	$(BIN)/python -m pytest

publish: setup  ## re-execute the committed notebooks, default mode, from empty caches, one at a time (their outputs are what GitHub shows; times in results/run_times.json)
	$(BIN)/python scripts/run_notebooks.py --inplace --cold --times results/run_times.json --out runs/publish

export: setup  ## save the notebooks' `#@save <module>` cells to utils/<module>.py (generated: edit the cell, then this)
	$(BIN)/python scripts/export.py

stats: setup  ## utils hand-written lines and the share of notebook code lines that are plumbing
	$(BIN)/python scripts/code_stats.py

benchmark: setup  ## utils training loop vs the fastai image-folder pipeline, one epoch each
	$(BIN)/python scripts/benchmark_fastai.py

table: setup  ## softmax vs L2-constrained softmax over 15 epochs and 3 seeds (the table notebook 02 reads)
	$(BIN)/python scripts/compare_heads.py --dataset mnist --heads softmax l2softmax --seeds 0 1 2 --epochs 15 --hparams '{"l2softmax": {"alpha": 16.0}}'

lab: setup
	$(BIN)/jupyter lab notebooks/

demo: setup  ## the draw-a-digit web app at http://127.0.0.1:8000 (python -m app --help for options)
	$(BIN)/python -m app

clean:
	rm -rf runs .pytest_cache
