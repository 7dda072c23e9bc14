# Shortcuts for the README's commands. Every target runs the idempotent set-up first.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo cascade test bench
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

# The synthetic cascade after the demo's stage 1: stage 1's errors on the training split, stage 2 trained
# on them (at most 10 minutes), then the cascade's evaluation: every stage's tables and a PNG of the curves.
cascade: demo
	if [ -d runs/synthetic-cpu-stage2/checkpoints ]; then \
	  $(BIN)/deeppose-fast train --out runs/synthetic-cpu-stage2 --resume; \
	else $(BIN)/deeppose-fast cascade-stats runs/synthetic-cpu && $(BIN)/deeppose-fast train --preset synthetic-cpu-stage2; fi
	$(BIN)/deeppose-fast eval runs/synthetic-cpu-stage2

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/deeppose-fast bench --quick
