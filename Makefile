# rollguard: `make demo` runs the demo, `make test` runs the tests. Both set up what
# they need: the virtual environment, the packages, and (as root) the system pieces.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test lint bench venv clean wheel wheelhouse

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

# dist/: the rollguard wheel (README: Walkthrough). build/ goes first: setuptools packs
# whatever an earlier build left there, modules removed since included.
wheel: venv
	rm -rf build dist
	$(BIN)/pip wheel --quiet --no-deps -w dist .

# wheelhouse/: rollguard and every dependency with all extras, as wheels, for hosts
# without a package index: pip install --no-index --find-links wheelhouse rollguard
wheelhouse: wheel
	rm -rf wheelhouse
	$(BIN)/pip wheel --quiet -w wheelhouse "$$(ls dist/rollguard-*.whl)[coordinator,postgres,redis]"

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache build dist wheelhouse
