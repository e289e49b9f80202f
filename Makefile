# Two commands on a fresh machine:  make run  /  make test
# python-mbedtls 2.10.1 has wheels for CPython 3.11 and 3.12 (and no later): take the first
# interpreter that really runs and is one of those (pyenv shims may exist but not run).
PYTHON ?= $(shell for p in python3 python3.12 python3.11; do \
  $$p -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12))' 2>/dev/null \
  && { echo $$p; break; }; done)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LINK   ?= /tmp/modem-ec2x
# pytest-xdist workers for make test: most tests wait (the pty, timers, TLS peers, driver
# models' own pauses) -- two workers kept 0.42 of one CPU busy (826 s of wall time, 351 s of
# CPU) -- so four on a 2-CPU machine: 460 s, 0.85 CPU; at 5,980 tests (2026-12-05, replays that
# keep recorded pauses of 10-30 s) four took 790 s with a load of ~0.5, six 601 s with a load of
# ~1.4 (all passed).  At 8,280 tests (2026-12-07) six took 830-860 s beside two other
# sessions' test runs, eight 703 s under the same load, its CPU 0.98 of the two (693 s of
# 1,406): still waiting, not computing.  At 10,070 tests (2026-12-07 evening) eight took
# 834 s alone (906 s beside a helper's runs: the CI budget is 15 min), twelve 677 s beside one
# helper, the run's CPU 1.27 of the two (879 s of 1,378).  TEST_WORKERS=0: one process.
TEST_WORKERS ?= 12

.PHONY: run run-ml302 test bench soak openssl socat hostprogs clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "modem-emulator needs CPython 3.11 or 3.12 (python-mbedtls 2.10.1): set PYTHON=..." >&2; exit 1; }
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

# socat is the reference make bench measures transparent mode against (pty <-> openssl), and
# README's control-socket example (`... | socat - UNIX-CONNECT:`) is run by the tests.
socat:
	@command -v socat >/dev/null || { \
	  echo "installing socat"; \
	  (apt-get update -qq && apt-get install -y -qq socat) >/dev/null 2>&1 || \
	  (sudo apt-get update -qq && sudo apt-get install -y -qq socat); }

# Real host programs the tests point at the pty (tests/e2e/test_real_host_programs.py,
# test_real_host_c_firmware.py): pppd's chat (package ppp), picocom, a C compiler.
hostprogs:
	@command -v chat >/dev/null && command -v picocom >/dev/null && command -v cc >/dev/null \
	  && test -f /usr/include/termios.h || { \
	  echo "installing ppp (chat), picocom, gcc and libc6-dev"; \
	  (apt-get update -qq && apt-get install -y -qq ppp picocom gcc libc6-dev) >/dev/null 2>&1 || \
	  (sudo apt-get update -qq && sudo apt-get install -y -qq ppp picocom gcc libc6-dev); }

run: $(STAMP)
	@echo "EC2x modem with the built-in loopback TLS peer; device link: $(LINK)" >&2
	@$(PY) -m emulator --profile ec2x --demo --offline --link $(LINK) --state-dir state/ec2x

run-ml302: $(STAMP)
	@echo "ML302 modem with the built-in loopback TLS peer; device link: /tmp/modem-ml302" >&2
	@$(PY) -m emulator --profile ml302 --demo --offline --link /tmp/modem-ml302 --state-dir state/ml302

# Skips count as failures here: a missing openssl or socat CLI or native TLS layer must show.
# Before the workers start, two processes rewrite the test modules' asserts and compile what
# they import, into __pycache__: each worker collects every module itself, and with no cache
# (a fresh checkout, or PYTHONDONTWRITEBYTECODE=1 as on these machines) each rewrote all ~270
# of them, 26 s of CPU apiece; from the cache a worker collects in 3 s.  Measured on the
# 2-CPU VM, loaded: six workers up and collected in 92 s without it, 14 s after it.  The run
# itself writes bytecode too, so the CLI tests' emulator processes start warm.  A collection
# error is left to the run to report.  --maxschedchunk 1: each worker is handed one test at a
# time, with the slowest first (tests/slow_first.txt, tests/conftest.py) -- by default the first
# ~290 tests of the collection went to each worker in turn, later chunks of up to ~580, so the
# slow files that sort last kept one or two workers busy for minutes while the rest idled:
# 14 min 22 s before, 10 min 24 s after, on the same VM an hour apart.
test: $(STAMP) openssl socat hostprogs
	@for half in 0 1; do find tests -name 'test_*.py' | sort | awk "NR % 2 == $$half" | \
	  xargs env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest -q --collect-only -p no:cacheprovider \
	  >/dev/null 2>&1 & done; wait
	env -u PYTHONDONTWRITEBYTECODE MODEM_EMULATOR_REQUIRE_ALL=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --maxschedchunk 1 --durations=15

# One table, each figure beside a reference from the same run (about a minute; under 3).
bench: $(STAMP) socat
	$(PY) -m bench

# Not part of `make test` (several minutes): fuzzing, open/close races, kill -9 during
# writes, 64 MiB through buffer mode.  Sizes: SOAK_LINES, SOAK_RACES, SOAK_KILLS, SOAK_MIB.
soak: $(STAMP)
	$(PY) -m bench.soak

clean:
	rm -rf $(VENV) state .pytest_cache
