# rollguard: `make demo` runs the demo, `make test` runs the tests. Both set up what
# they need: the virtual environment, the packages, and (as root) the system pieces.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test lint bench venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

demo: venv
	@bash scripts/ensure-system demo
	$(BIN)/rollguard demo

test: venv
	@bash scripts/ensure-system test
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: venv
	@for b in bench/*; do [ -x "$$b" ] && [ -f "$$b" ] && echo "== $$b" && $$b; done

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
