# The two commands of the README: `make book` and `make test`.
# Both first create (or refresh) the project environment .venv/ from constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: book test env export readme clean

env: $(STAMP)

# The environment is stale when the pins or the package metadata change.
$(STAMP): constraints.txt setup.py settings.ini
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip check
	@touch $@

export: $(STAMP)
	cd nbs && ../$(BIN)/nbdev_export

readme: $(STAMP)
	$(BIN)/python tools/readme.py

# nbdev_test over every notebook in nbs/ (nbs/_scratch is skipped), then pytest.
test: $(STAMP)
	$(BIN)/nbdev_test --n_workers 2 --do_print
	$(BIN)/python -m pytest tests -q -n 2 --durations=10

# Jupyter Book into _build/html (notebooks executed, cached in _build/.jupyter_cache), copied to book_output/.
book: $(STAMP)
	$(BIN)/python tools/build_book.py

clean:
	rm -rf book_output book_output.tmp _build
