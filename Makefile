# The README's two commands: `make demo` (main job, simulated robot) and `make test`.
# Both create or update .venv first (idempotent: seconds when nothing changed).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
TESTS ?= tests

.PHONY: env demo test test-faults bench clean-env

env:
	@bash scripts/setup_env.sh

demo: env
	@$(VENV)/bin/mail-il demo

# TESTS=tests/launch runs part of the suite the same way
test: env
	@PY=$(PY) TESTS=$(TESTS) bash scripts/run_tests.sh $(PYTEST_ARGS)

test-faults: env
	@rm -f runs/fault_injection.json
	@MAIL_FAULT_FIGURES=runs/fault_injection.json $(PY) -m pytest -m ros -s tests/nodes/test_fault_injection.py $(PYTEST_ARGS)

bench: env
	@$(VENV)/bin/mail-il bench model --quick

clean-env:
	rm -rf $(VENV) build
