# The two commands of the README: `make book` and `make test`.
# Both first create (or refresh) the project environment .venv/ from constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: book test env export readme clean reproduce

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

# nbdev_test over every notebook in nbs/ (nbs/_scratch is skipped), then pytest. The explorer's
# browser test needs Debian's chromium: installed here when missing (as root, ~30 s), else skipped.
test: $(STAMP)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends chromium >/dev/null; }; } || \
	  echo 'chromium is not installed: tests/test_explorer.py will skip its browser test'
	$(BIN)/nbdev_test --n_workers 2 --do_print
	$(BIN)/python -m pytest tests -q -n 2 --durations=10

# Jupyter Book into _build/html (notebooks executed, cached in _build/.jupyter_cache), copied to book_output/;
# then no heading of the built book may claim what its own verdict row denies.
book: $(STAMP)
	$(BIN)/python tools/build_book.py
	$(BIN)/python tools/check_claims.py book_output

# The whole study from scratch, through the same command as by hand (see the README, "Reproducing
# the study"): the primary study, the algorithms study and the network ablation. Each line resumes
# where a killed one stopped. STUDY_ARGS is added to each, e.g. STUDY_ARGS='--scheduler tcp://HOST:8786'.
STUDY_ARGS ?=
reproduce: $(STAMP)
	$(BIN)/atoms study --algos a2c --nets nature --games pong pong-2balls pong-2balls-target --seeds 1 2 3 4 5 $(STUDY_ARGS)
	$(BIN)/atoms study --algos ppo dqn --nets nature --games pong --seeds 1 2 3 4 5 $(STUDY_ARGS)
	$(BIN)/atoms study --algos a2c --nets small --games pong pong-2balls pong-2balls-target --seeds 1 2 3 $(STUDY_ARGS)

clean:
	rm -rf book_output book_output.tmp _build
