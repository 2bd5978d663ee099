# ProdOps — every target sets itself up (virtualenv + install) on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The embeddings extra (sentence embeddings for feedback themes and duplicates; the .venv is ~1.8 GB with it) is
# installed by default so the tests cover both similarity backends; `make install EXTRAS=dev` skips it.
EXTRAS ?= dev,embeddings
comma  := ,
# One stamp per set of extras, so `make install EXTRAS=dev` on an existing .venv installs, not "nothing to do".
STAMP  := $(VENV)/.installed-$(subst $(comma),+,$(EXTRAS))

.PHONY: install demo test run worker migrate lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

demo: install          ## the real bot on SQLite against the bundled Slack emulator
	$(BIN)/prodops demo

test: install          ## the whole suite, on SQLite and on Postgres (skipped loudly without Postgres)
	$(BIN)/pytest

run: install           ## serve for real (reads .env; migrates on start)
	$(BIN)/prodops serve

worker: install
	$(BIN)/prodops worker

migrate: install
	$(BIN)/prodops migrate

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install         ## ack latency and throughput vs a bare Bolt app
	$(BIN)/python bench/ack.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
