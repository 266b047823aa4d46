# The two commands of the README: `make demo` (train + evaluate + draw on the synthetic dataset,
# on the CPU) and `make test`. Both set up .venv first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_CONFIG ?= configs/Synthetic/atss_R_18_FPN_tiny.yaml
DEMO_OUTPUT ?= output/atss_R_18_FPN_tiny

.PHONY: setup demo test lint docs gpu-test cuda-check clean

setup:
	bash dev/setup_env.sh

# --resume: a second `make demo` reuses (or finishes) the previous run instead of starting over;
# delete $(DEMO_OUTPUT) to train again.
demo: setup
	$(PY) tools/train_net.py --config-file $(DEMO_CONFIG) --resume OUTPUT_DIR $(DEMO_OUTPUT)
	$(PY) tools/visualize_predictions.py --config-file $(DEMO_CONFIG) \
		--output $(DEMO_OUTPUT)/predictions.png MODEL.WEIGHTS $(DEMO_OUTPUT)/model_final.pth

# Formatter and linter check (ruff.toml); `bash dev/lint.sh --fix` applies them.
lint: setup
	VENV=$(VENV) bash dev/lint.sh

# The documentation site (docs/conf.py): docs/, the top-level Markdown files and the API reference
# from the docstrings, into docs/_build/html (start page docs/_build/html/docs/index.html).
# Warnings are errors: a broken link or cross-reference, or a docstring that does not render,
# fails the build. requirements-docs.txt is installed into .venv when it changed (a stamp file, as
# dev/setup_env.sh does for the other requirements).
DOCS_STAMP = $(VENV)/.d2ext-docs-requirements-$(shell sha256sum requirements-docs.txt | cut -c1-16)
$(DOCS_STAMP): requirements-docs.txt
	$(PY) -m pip install -q -r requirements-docs.txt -c requirements.txt
	rm -f $(VENV)/.d2ext-docs-requirements-*
	touch $@

docs: setup $(DOCS_STAMP)
	$(PY) -m sphinx -b html -W --keep-going -q -c docs . docs/_build/html

# CUDA-marked tests are skipped here (they need a GPU): `make gpu-test` runs them.
test: setup
	$(PY) -m pytest tests -m "not cuda"

# On a machine with CUDA: build the CUDA kernels, run the cuda-marked tests and benchmark the ops
# on cuda (dev/gpu_test.sh --help: stages, --all-methods, --full). Without CUDA: says so, exits 0.
GPU_TEST_ARGS ?=
gpu-test:
	VENV=$(VENV) bash dev/gpu_test.sh $(GPU_TEST_ARGS)

# Compiles the CUDA kernels in a throwaway folder (needs nvcc, not a GPU).
cuda-check:
	D2EXT_SKIP_BUILD=1 bash dev/setup_env.sh
	bash dev/check_cuda_build.sh

clean:
	rm -rf build d2ext/_C*.so docs/_build
