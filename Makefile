# Two entry points that work on a fresh machine with only Python: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN     = $(VENV)/bin

# torchvision only with the torch it was built for: a bare `pip install torchvision` (or timm)
# replaces the pinned torch with a CUDA build (~5 GB). TORCH_INDEX=https://download.pytorch.org/whl/cpu
# keeps them on CPU builds. timm after the pair, so that it finds its torchvision in place.
VISION      ?= torch==2.14.1 torchvision==0.29.1
TORCH_INDEX ?=

.PHONY: demo test install install-dev install-vision clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first, pinned, so pip does not pull a multi-GB CUDA build on CPU-only machines
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev
install-vision: $(VENV)/.installed
	$(BIN)/pip install --quiet $(VISION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet timm

demo: install
	$(BIN)/distil demo

test: install-dev
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
