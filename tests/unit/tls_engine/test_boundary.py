"""The TLS library boundary (issue 10).

Only tls_engine/native/ may reach below python-mbedtls' public API: the wrapper's
private names, its private modules, ctypes. Everything else in emulator/ and
tls_engine/ goes through native's functions, which check those names once (the
self-check) and fall back to the public API when a wheel lacks them, so a different
wheel degrades instead of crashing every handshake.

1. An AST check over emulator/ and tls_engine/ (outside tls_engine/native/): no
   `x._name` where x is not `self`/`cls` (dunders such as `__class__` excepted), no
   getattr/setattr/hasattr/delattr with such a name, no private module or name imported
   from a third-party package, no ctypes.
2. With each private name the engine relies on made unusable, the self-check reports
   it and a real handshake plus a 200 KiB echo still work through the public fallbacks.
"""
from __future__ import annotations

import ast
import hashlib
import os
from pathlib import Path

import pytest

from emulator.testing.engine_client import ClientDriver
from emulator.testing.peers import TlsServer
from tls_engine import HandshakeComplete, TlsClientSession, native
from tls_engine.native import wrapper

ROOT = Path(__file__).resolve().parents[3]
SCANNED = ("emulator", "tls_engine")
EXEMPT = Path("tls_engine", "native")      # the one place allowed below the public API
OWN_PACKAGES = {"emulator", "tls_engine"}  # their private names are not the wrapper's
SELF_NAMES = {"self", "cls"}
ATTR_BUILTINS = {"getattr", "setattr", "hasattr", "delattr"}

# Known accesses outside tls_engine's area: (path, expression) -> how many are allowed.
# Narrow on purpose: an entry covers that exact expression in that file, no more often.
# Remove an entry when its code is fixed (a fixed entry is not an error, an extra
# occurrence is).
ALLOWED: dict[tuple[str, str], int] = {}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id in SELF_NAMES


def private_accesses(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """(line, expression) for every reach into another object's or package's private names."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Attribute):
            if _private(node.attr) and not _is_self(node.value):
                found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Call):
            if (_dynamic_import(node) and node.args and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str) and _private_module(node.args[0].value)):
                found.append((node.lineno, ast.unparse(node)))
            elif (isinstance(node.func, ast.Name) and node.func.id in ATTR_BUILTINS
                    and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                    and isinstance(node.args[1].value, str) and _private(node.args[1].value)
                    and not _is_self(node.args[0])):
                found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "ctypes" or (parts[0] not in OWN_PACKAGES
                                            and any(_private(p) for p in parts)):
                    found.append((node.lineno, f"import {alias.name}"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] == "ctypes" or (parts[0] not in OWN_PACKAGES and (
                    any(_private(p) for p in parts) or any(_private(a.name) for a in node.names))):
                names = ", ".join(a.name for a in node.names)
                found.append((node.lineno, f"from {node.module} import {names}"))
    return sorted(found)


def _dynamic_import(node: ast.Call) -> bool:
    """__import__("x"), importlib.import_module("x"), import_module("x")."""
    func = node.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    return name in ("__import__", "import_module")


def _private_module(name: str) -> bool:
    parts = name.split(".")
    return parts[0] == "ctypes" or (parts[0] not in OWN_PACKAGES and any(_private(p) for p in parts))


def _scanned_files() -> list[Path]:
    files = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if rel.parts[:len(EXEMPT.parts)] != EXEMPT.parts:
                files.append(rel)
    return files


def test_the_check_sees_what_it_should():
    source = (
        "import ctypes\n"
        "import mbedtls._tls\n"
        "from mbedtls import _tls\n"
        "from mbedtls.tls import _x\n"
        "from emulator.at import _table\n"          # the project's own: not this check's business
        "class C:\n"
        "    def f(self, other):\n"
        "        self._ok, cls._ok, self.__class__, other.__name__\n"
        "        other._bad\n"
        "        self._buf._input_buffer\n"
        "        getattr(other, '_bad2'), getattr(self, '_ok'), getattr(other, '__dict__')\n"
        "importlib.import_module('ctypes'), __import__('mbedtls._tls'), import_module('mbedtls.tls')\n"
    )
    assert private_accesses(source) == [
        (1, "import ctypes"), (2, "import mbedtls._tls"), (3, "from mbedtls import _tls"),
        (4, "from mbedtls.tls import _x"),
        (9, "other._bad"), (10, "self._buf._input_buffer"), (11, "getattr(other, '_bad2')"),
        (12, "__import__('mbedtls._tls')"), (12, "importlib.import_module('ctypes')"),
    ]


def test_no_private_names_outside_tls_engine_native():
    files = _scanned_files()
    assert any(p.parts[0] == "tls_engine" for p in files) and any(p.parts[0] == "emulator" for p in files)
    counts: dict[tuple[str, str], list[int]] = {}
    for rel in files:
        for line, expr in private_accesses((ROOT / rel).read_text(encoding="utf-8"), str(rel)):
            counts.setdefault((rel.as_posix(), expr), []).append(line)
    offenders = [f"{path}:{line}: {expr}"
                 for (path, expr), lines in sorted(counts.items())
                 if len(lines) > ALLOWED.get((path, expr), 0)
                 for line in lines]
    assert offenders == [], ("reach below another object's API only inside tls_engine/native/ "
                             "(add a function there):\n" + "\n".join(offenders))


def test_the_allow_list_stays_out_of_tls_engine():
    assert not [key for key in ALLOWED if key[0].startswith("tls_engine/")]


# --- a wheel without the private names: degraded, not broken ---------------------------------


@pytest.fixture
def private_names_missing(monkeypatch, request):
    """Make one private name the engine relies on unusable, as a different wheel would."""
    monkeypatch.setattr(wrapper, request.param, "_not_in_this_wheel")
    native._init()
    try:
        yield request.param
    finally:
        monkeypatch.undo()
        native._init()
        assert native.available(), native.unavailable_reason()


@pytest.mark.parametrize("private_names_missing",
                         ["INPUT_BUFFER", "OUTPUT_BUFFER", "HANDSHAKE_STATE",
                          "SUITE_ID_FN", "SUITE_NAME_FN"],
                         indirect=True)
def test_engine_works_without_the_wrappers_private_names(private_names_missing, rsa_leaf,
                                                         base_settings):
    assert not wrapper.private_names_usable()
    assert not native.available()
    assert "_not_in_this_wheel" in native.unavailable_reason()
    payload = os.urandom(200 * 1024)  # > the 32 KiB input ring: fed in pieces
    with TlsServer(rsa_leaf, legacy=True) as server:
        driver = ClientDriver(TlsClientSession(base_settings()), server.port)
        result = driver.handshake()
        assert isinstance(result, HandshakeComplete), result
        assert result.cipher_id == 0xC02F and result.cipher_name == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        echoed = driver.exchange(payload, timeout=10)
        driver.close()
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
