"""Puts the demo peer's throw-away material where a newcomer's pasted examples
expect it: the CA as UFS:demo-ca.pem on modules with a file system."""
from __future__ import annotations

DEMO_CA_NAME = "UFS:demo-ca.pem"
DEMO_CLIENT_CERT_NAME = "UFS:demo-client.pem"
DEMO_CLIENT_KEY_NAME = "UFS:demo-client.key"


def install_demo_material(modem, demo) -> None:
    if modem.profile.command_variant("+QFUPL") is None:
        return
    modem.files.write(DEMO_CA_NAME, demo.ca_pem)
    modem.files.write(DEMO_CLIENT_CERT_NAME, demo.client_cert_pem)
    modem.files.write(DEMO_CLIENT_KEY_NAME, demo.client_key_pem)
