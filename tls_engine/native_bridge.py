"""Lazy, failure-proof access to tls_engine.native (written separately).

native.py reaches into the C structs of this exact python-mbedtls wheel; it may be
missing, fail to import, or report itself unusable. Every caller goes through here so
that the engine degrades (no resumption / key log / RC4-3DES) instead of crashing.
"""
from __future__ import annotations

from types import ModuleType

_state: dict[str, object] = {}


def _load() -> ModuleType | None:
    if "module" not in _state:
        try:
            from . import native  # noqa: PLC0415 - deliberately lazy

            if not native.available():
                _state["reason"] = str(native.unavailable_reason())
                _state["module"] = None
            else:
                _state["module"] = native
        except Exception as exc:  # ImportError, or a self-check blowing up
            _state["reason"] = f"tls_engine.native not usable: {type(exc).__name__}: {exc}"
            _state["module"] = None
    return _state["module"]  # type: ignore[return-value]


def native_available() -> bool:
    return _load() is not None


def native_module() -> ModuleType | None:
    return _load()


def unavailable_reason() -> str:
    _load()
    return str(_state.get("reason", ""))


def _reset_for_tests() -> None:
    _state.clear()
