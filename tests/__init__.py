"""The test suite.  Illegal state transitions raise here instead of being logged and
ignored as in a running emulator (emulator/sockets/ssl_socket.py: strict_states)."""
import os

os.environ.setdefault("MODEM_EMULATOR_STRICT", "1")
