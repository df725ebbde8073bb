# The README's two commands: `make demo` (main job, simulated robot) and `make test`.
# Both create or update .venv first (idempotent: seconds when nothing changed); `make test` also
# .venv-metaworld (Meta-World v3 over .venv) for tests/metaworld.
VENV ?= .venv
PY := $(VENV)/bin/python
MW_VENV := .venv-metaworld
PYTEST_ARGS ?=
TESTS ?= tests

.PHONY: env demo test test-faults bench clean-env metaworld-env

env:
	@bash scripts/setup_env.sh

demo: env
	@$(VENV)/bin/mail-il demo

# TESTS=tests/launch runs part of the suite the same way; tests/metaworld run (again) under Meta-World's venv
test: env metaworld-env
	@PY=$(PY) MW_PY=$(MW_VENV)/bin/python TESTS=$(TESTS) bash scripts/run_tests.sh $(PYTEST_ARGS)

test-faults: env
	@rm -f runs/fault_injection.json
	@MAIL_FAULT_FIGURES=runs/fault_injection.json $(PY) -m pytest -m ros -s tests/nodes/test_fault_injection.py $(PYTEST_ARGS)

bench: env
	@$(VENV)/bin/mail-il bench model --quick

# Meta-World v3 (the public benchmark) in .venv-metaworld, over .venv: .venv-metaworld/bin/mail-il metaworld ...
metaworld-env: env
	@bash scripts/setup_metaworld_env.sh

clean-env:
	rm -rf $(VENV) $(MW_VENV) build
