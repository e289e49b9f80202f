"""Puts the demo peer's throw-away material where a newcomer's pasted examples
expect it: the CA as UFS:demo-ca.pem on modules with a file system (EC2x), and in
the certificate store's CA slot ("/caCrt.pem", AT+QSECWRITE=0) on modules with one
(ML302), so each manual's seclevel 1 example works against the demo peer as is."""
from __future__ import annotations

from cryptography import x509

from emulator.logsafe import get_logger
from emulator.storage.secstore import SLOT_CA_CERT, SLOT_PATHS, SecStoreError
from emulator.storage.vfs import FileError

log = get_logger("emulator.demo")

DEMO_CA_NAME = "UFS:demo-ca.pem"
NOT_INSTALLED = "demo material not installed"     # (how install_demo_material's words start then)
DEMO_CLIENT_CERT_NAME = "UFS:demo-client.pem"
DEMO_CLIENT_KEY_NAME = "UFS:demo-client.key"


def demo_material_hint(profile) -> str:
    """Where --demo puts the demo CA on this profile's module (for the start-up text)."""
    if profile.command_variant("+QFUPL") is not None:
        return f"its CA is uploaded as {DEMO_CA_NAME}"
    if profile.command_variant("+QSECWRITE") is not None:
        return (f"its CA is in the CA certificate slot ({SLOT_PATHS[SLOT_CA_CERT]}, AT+QSECWRITE=0) "
                f"unless that slot holds a CA of your own")
    return "its CA is not installed (this module has no file system or certificate store)"


def install_demo_material(modem, demo) -> str:
    """Install the demo CA (and, with a file system, the demo client certificate and key);
    returns what was done, in words.  A state dir whose store cannot be used (a file where
    ufs/ or secstore/ should be, no permission) is the same warning for --demo as the host's
    first file command meets there (419 / 23): the modem starts all the same."""
    try:
        return _install(modem, demo)
    except (FileError, SecStoreError) as exc:
        log.warning("--demo: the demo material is not installed: %s", exc)
        return f"{NOT_INSTALLED}: {exc}"


def _install(modem, demo) -> str:
    if modem.profile.command_variant("+QFUPL") is not None:
        modem.files.write(DEMO_CA_NAME, demo.ca_pem)
        modem.files.write(DEMO_CLIENT_CERT_NAME, demo.client_cert_pem)
        modem.files.write(DEMO_CLIENT_KEY_NAME, demo.client_key_pem)
        return f"demo CA uploaded as {DEMO_CA_NAME}"
    if modem.profile.command_variant("+QSECWRITE") is not None:
        return _install_ca_slot(modem.secstore, demo.ca_pem)
    return "demo CA not installed: the module has no file system or certificate store"


def _subject(pem: bytes) -> x509.Name | None:
    try:
        return x509.load_pem_x509_certificate(pem).subject
    except ValueError:
        return None


def _install_ca_slot(store, ca_pem: bytes) -> str:
    """The demo CA into the CA slot: when it is empty, or holds an earlier run's demo CA
    (a new one is made at every start, with the same subject); never over a CA of the
    user's own (the state dir is theirs: a slot they wrote is left alone, with a warning)."""
    path = SLOT_PATHS[SLOT_CA_CERT]
    try:
        if store.is_filled(SLOT_CA_CERT):
            held = store.load(SLOT_CA_CERT)
            if held == ca_pem:
                return f"demo CA already in the CA slot {path}"
            if held is None or _subject(held) != _subject(ca_pem):
                log.warning("--demo: the CA slot %s holds a certificate of your own: left in place, "
                            "so seclevel 1/2 against the demo peer fails (AT+QSECDEL=0 and restart "
                            "to use the demo CA)", path)
                return f"demo CA not installed: the CA slot {path} holds a certificate of your own"
            store.delete(SLOT_CA_CERT)
        store.write(SLOT_CA_CERT, ca_pem)
    except SecStoreError as exc:
        log.warning("--demo: cannot write the demo CA into the CA slot %s: %s", path, exc)
        return f"demo CA not installed: {exc}"
    return f"demo CA written to the CA slot {path}"
