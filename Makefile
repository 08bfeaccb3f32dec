# The two commands of the README: `make demo` and `make test`. Each builds what it needs.
PYTHON ?= python3
VENV := .venv
CHECKOV_VENV := .venv-checkov
PIP_FLAGS := --quiet --disable-pip-version-check
# Terraform asks HashiCorp's update service about new versions unless told not to.
export CHECKPOINT_DISABLE := 1

.PHONY: demo test lint bench soak clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) -r requirements-dev.txt
	touch $@

# checkov pins its own versions of common libraries, so it lives in a venv of its own.
$(CHECKOV_VENV)/.installed:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install $(PIP_FLAGS) 'checkov>=3.2,<4'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/python scripts/demo.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(VENV)/.installed $(CHECKOV_VENV)/.installed lint
	$(VENV)/bin/python -m pytest -n 2

bench: $(VENV)/.installed
	$(VENV)/bin/python -m bench

soak: $(VENV)/.installed
	$(VENV)/bin/python scripts/soak.py --seeds 2000 --jobs 2

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .pytest_cache .hypothesis .ruff_cache
