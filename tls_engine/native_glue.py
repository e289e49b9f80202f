"""Configuration-time use of tls_engine.native: exact cipher-suite lists (RC4/3DES),
renegotiation and the key log. Applied to a ClientContext before wrap_buffers()."""
from __future__ import annotations

from . import native_bridge
from .config import EnginePlan
from .errors import UNSUPPORTED_CIPHER, EngineConfigError
from .settings import TlsSettings


def apply_native_conf(context, plan: EnginePlan, settings: TlsSettings, notes: list[str]) -> None:
    wanted = plan.native_suites or settings.renegotiation or settings.keylog
    if not wanted:
        return
    native = native_bridge.native_module()
    if native is None:
        # config.build_plan already refused suites that need native; what is left are
        # optional features, so degrade with a note.
        notes.append("tls_engine.native unavailable: no renegotiation / key log")
        return
    try:
        conf = native.NativeConf(context)
        if plan.native_suites:
            conf.set_ciphersuites(plan.native_suites)
    except Exception as exc:
        raise EngineConfigError(UNSUPPORTED_CIPHER, f"cannot offer the configured cipher suites: {exc}") from None
    if settings.renegotiation:
        try:
            conf.set_renegotiation(True)
        except Exception as exc:
            notes.append(f"renegotiation not enabled: {exc}")
    if settings.keylog:
        try:
            conf.set_keylog(settings.keylog)
        except Exception as exc:
            notes.append(f"key log not enabled: {exc}")
