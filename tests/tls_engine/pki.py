"""Certificates trustme cannot make: an intermediate chain with chosen dates, a
certificate whose signature does not verify. Built with `cryptography`."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NOW = datetime.now(timezone.utc)


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(cn: str, issuer: Issued | None, *, ca: bool, names=(), not_before=None,
              not_after=None, signing_key=None) -> Issued:
    """issuer None = self-signed. signing_key overrides the issuer's key (bad signature)."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder()
               .subject_name(_name(cn))
               .issuer_name(issuer.cert.subject if issuer else _name(cn))
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number()))
    builder = builder.not_valid_before(not_before or NOW - timedelta(days=1))
    builder = builder.not_valid_after(not_after or NOW + timedelta(days=365))
    builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if names:
        sans = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    signer = signing_key or (issuer.key if issuer else key)
    return Issued(builder.sign(signer, hashes.SHA256()), key)


class ServerIdentity:
    """Duck-types trustme.LeafCert.configure_cert for servers.server_context()."""

    def __init__(self, leaf: Issued, *chain: Issued) -> None:
        self.leaf = leaf
        self.chain = chain

    def configure_cert(self, ctx) -> None:
        import os
        import tempfile

        with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as f:
            f.write(self.leaf.cert_pem + b"".join(c.cert_pem for c in self.chain) + self.leaf.key_pem)
        try:
            ctx.load_cert_chain(f.name)
        finally:
            os.unlink(f.name)
