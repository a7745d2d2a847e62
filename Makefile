# facepipe: `make demo` runs the pipeline once on this machine; `make test` runs every test tier.
# Both set themselves up on a fresh Debian/Ubuntu machine (apt packages, a virtualenv, models, tools).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# On machines of this project the models come from ../shared/models (verified by checksum);
# elsewhere the fetch step downloads them from the URLs in models/manifest.json.
FACEPIPE_MODEL_MIRROR ?= $(wildcard $(abspath ../shared/models))
export FACEPIPE_MODEL_MIRROR
PYTEST_ARGS ?=

.PHONY: demo test test-long test-fast bench lint models venv system tools clean

$(VENV)/.installed: apps/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e 'apps[test,demo]'
	touch $@

venv: $(VENV)/.installed

system:
	bash .ci/install-system.sh

models: venv
	$(VENV)/bin/facepipe models fetch --manifest models/manifest.json

# Helm 3 + 4, kubectl, checkov, etcd + kube-apiserver, kube-scheduler, KWOK, Argo CD, Prometheus + promtool,
# podman + base image: all cached under $${FACEPIPE_TOOLS_CACHE:-/var/cache/facepipe-tools}; a second run takes
# seconds. On a fresh machine the Go builds take ~25 min on 2 cores: `make tools` alone warms the cache.
tools:
	bash .ci/install-helm.sh >/dev/null
	bash .ci/install-checkov.sh >/dev/null
	bash .ci/install-kube.sh >/dev/null
	bash .ci/install-kube.sh kube-scheduler >/dev/null
	bash .ci/install-kwok.sh >/dev/null
	bash .ci/install-argocd.sh >/dev/null
	bash .ci/install-prometheus.sh >/dev/null
	if [ -f .ci/install-podman.sh ]; then bash .ci/install-podman.sh >/dev/null; fi

demo:
	bash .ci/install-system.sh --demo
	$(MAKE) --no-print-directory models
	bash scripts/demo.sh

lint: venv
	$(VENV)/bin/ruff check apps tests bench
	$(VENV)/bin/ruff format --check apps

test: system models tools lint
	$(PY) -m pytest $(PYTEST_ARGS)

# The long variants: full outage durations, the full fuzzing count.
test-long: system models tools
	FACEPIPE_LONG_TESTS=1 $(PY) -m pytest -m slow $(PYTEST_ARGS)

# Unit tests only: no brokers, no servers.
test-fast: models
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench: system models
	$(PY) -m bench

clean:
	rm -rf $(VENV) demo-output .pytest_cache
