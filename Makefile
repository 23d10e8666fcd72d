# `make run` starts the cloud on its embedded defaults; `make test` runs the whole suite.
# Both create and reuse .venv on their own.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean system-deps guest lab lab-down

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/nubo serve

system-deps:
	scripts/system-deps

# The tiny test guest: kernel + initramfs from Debian packages, kept in
# $NUBO_GUEST_DIR (default ~/.cache/nubo/guest).
guest:
	guest/build

# A lab of three SSH hosts in network namespaces (root): `nubo lab up` prints how to use it
lab: $(STAMP) system-deps
	$(BIN)/nubo lab up -n 3

lab-down: $(STAMP)
	$(BIN)/nubo lab down

test: $(STAMP) system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check core apis drivers hybrid tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/scheduler.py
	$(BIN)/python bench/vmpool.py
	$(BIN)/python bench/ec2_vs_moto.py

clean:
	rm -rf $(VENV) var .pytest_cache
