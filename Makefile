# The two set-up commands of the README: `make demo` and `make test`.
# uv is installed with pip when missing; `python3 -m uv` then works whatever the PATH.
UV := $(shell command -v uv >/dev/null 2>&1 && echo uv || echo python3 -m uv)
PYTEST_ARGS ?= -q -m "not slow"

.PHONY: setup demo test test-all lint

setup:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --locked --compile-bytecode

demo: setup
	$(UV) run tlkit demo

# pytest exit code 5 means no test ran: that is a failure here
test: setup
	@$(UV) run pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: no tests ran"; exit 1; fi; exit $$rc

test-all: PYTEST_ARGS = -q
test-all: test

# ruff (configured in pyproject.toml) and the layout's figures (bench/structure.py: no import cycles,
# no private names across modules, modules <= 400 lines, functions <= 80 lines)
lint: setup
	$(UV) run ruff check tlkit tests bench
	$(UV) run python bench/structure.py
