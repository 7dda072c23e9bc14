# Shortcuts for the README's commands. Every target runs the idempotent set-up first.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench
setup:
	bash scripts/setup.sh

# The main job on the embedded default data set: prepare synthetic people, train the CPU preset
# (at most 10 minutes), evaluate it under both protocols. A second `make demo` resumes (or reuses) the
# run in runs/synthetic-cpu: a run folder belongs to one run, and train refuses to start a new one there.
demo: setup
	$(BIN)/deeppose-fast prepare synthetic
	if [ -d runs/synthetic-cpu/checkpoints ]; then $(BIN)/deeppose-fast train --out runs/synthetic-cpu --resume; \
	else $(BIN)/deeppose-fast train --preset synthetic-cpu; fi
	$(BIN)/deeppose-fast eval runs/synthetic-cpu

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/deeppose-fast bench --quick
