# The two commands of the README: `make book` and `make test`.
# Both first create (or refresh) the project environment .venv/ from constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: book test env export clean

env: $(STAMP)

$(STAMP): constraints.txt setup.py settings.ini
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip check
	@touch $@

export: $(STAMP)
	cd nbs && ../$(BIN)/nbdev_export

test: $(STAMP)
	$(BIN)/nbdev_test --n_workers 2 --do_print
	$(BIN)/python -m pytest tests -q -n 2 --durations=10

book: $(STAMP)
	$(BIN)/jupyter-book build . --path-output _build_tmp --warningiserror --keep-going || true
	$(BIN)/python tools/build_book.py

clean:
	rm -rf book_output _build _build_tmp
