# Two commands on a fresh machine:  make run  /  make test
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LINK   ?= /tmp/modem-ec2x

.PHONY: run run-ml302 test bench openssl clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# The openssl CLI is the independent TLS peer for PSK, DTLS and renegotiation tests.
openssl:
	@command -v openssl >/dev/null || { \
	  echo "installing the openssl CLI"; \
	  (apt-get update -qq && apt-get install -y -qq openssl) >/dev/null 2>&1 || \
	  (sudo apt-get update -qq && sudo apt-get install -y -qq openssl); }

run: $(STAMP)
	@echo "EC2x modem with the built-in loopback TLS peer; device link: $(LINK)" >&2
	@$(PY) -m emulator --profile ec2x --demo --offline --link $(LINK) --state-dir state/ec2x

run-ml302: $(STAMP)
	@$(PY) -m emulator --profile ml302 --demo --offline --link /tmp/modem-ml302 --state-dir state/ml302

test: $(STAMP) openssl
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) state .pytest_cache
