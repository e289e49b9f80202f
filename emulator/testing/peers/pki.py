"""Throw-away PKI for the test peers: the one place tests, bench/ and the peers get keys.

Pki (trustme on top of cryptography) makes CAs and leaves as files and PEM bytes: the CA,
a wrong CA, an intermediate, RSA and ECDSA server leaves, a client leaf, date-windowed
leaves. Keys are RSA unless asked: the EC2x and ML302 cipher suite tables are mostly RSA
key exchange / ECDHE-RSA, which an ECDSA server key cannot serve.

make_cert() builds what trustme cannot: a certificate whose signature does not verify
(signed with another key than its issuer's) and self-made roots/intermediates;
ServerIdentity serves such a leaf and its chain from a TlsServer.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import ssl
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

RSA = trustme.KeyType.RSA
ECDSA = trustme.KeyType.ECDSA
SERVER_NAMES = ("www.iottest.work", "localhost", "127.0.0.1", "220.180.239.212")


@dataclass
class CertFiles:
    """One end-entity certificate: PEM bytes and files, ready for load_cert_chain / s_server."""
    cert_pem: bytes          # the leaf alone
    key_pem: bytes
    chain_pem: bytes         # leaf followed by any intermediates (what a server sends)
    cert_path: Path
    key_path: Path
    chain_path: Path
    leaf: trustme.LeafCert

    @property
    def load_args(self) -> tuple[str, str]:
        """(certfile, keyfile) for SSLContext.load_cert_chain: the chain and the key."""
        return str(self.chain_path), str(self.key_path)

    def configure_cert(self, ctx: ssl.SSLContext) -> None:
        """Serve this leaf (and its chain) from `ctx`, as trustme's LeafCert does."""
        ctx.load_cert_chain(*self.load_args)


@dataclass
class CaFiles:
    ca: trustme.CA
    cert_pem: bytes
    cert_path: Path
    key_pem: bytes           # a CA's own key, for tests that sign things themselves

    def configure_trust(self, ctx: ssl.SSLContext) -> None:
        """Trust this CA in `ctx` (e.g. for the client certificates a server asks for)."""
        ctx.load_verify_locations(cadata=self.cert_pem.decode())


class Pki:
    """CA, server and client certificates, a wrong CA and an intermediate chain.

    Attributes:
      ca, wrong_ca, intermediate: CaFiles (intermediate is signed by ca)
      server       RSA leaf for SERVER_NAMES signed by ca
      server_ec    ECDSA leaf for SERVER_NAMES signed by ca
      client       client leaf ("modem client") signed by ca
      wrong_server RSA leaf for SERVER_NAMES signed by wrong_ca
      chained      RSA leaf signed by intermediate; chain_pem = leaf + intermediate
    Files live in `directory` (a temp dir removed when the object is collected or cleanup()).
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        if directory is None:
            directory = tempfile.mkdtemp(prefix="peers-pki-")
            self._cleanup = weakref.finalize(self, shutil.rmtree, directory, True)
        else:
            self._cleanup = None
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._names: set[str] = set()
        self._lock = threading.Lock()
        self.ca = self._ca_files("ca", trustme.CA(key_type=RSA))
        self.wrong_ca = self._ca_files("wrong_ca", trustme.CA(key_type=RSA))
        self.intermediate = self._ca_files("intermediate", self.ca.ca.create_child_ca(key_type=RSA))
        self.server = self.issue("server", *SERVER_NAMES)
        self.server_ec = self.issue("server_ec", *SERVER_NAMES, key_type=ECDSA)
        self.client = self.issue("client", "modem-client.example", common_name="modem client")
        self.wrong_server = self.issue("wrong_server", *SERVER_NAMES, ca=self.wrong_ca)
        self.chained = self.issue("chained", *SERVER_NAMES, ca=self.intermediate)

    def cleanup(self) -> None:
        if self._cleanup is not None:
            self._cleanup()

    def _claim(self, name: str) -> str:
        """`name`, or `name-2`, `name-3`...: one shared Pki serves the whole run, and two
        tests issuing under one name must not overwrite each other's files."""
        with self._lock:
            unique, n = name, 1
            while unique in self._names:
                n += 1
                unique = f"{name}-{n}"
            self._names.add(unique)
            return unique

    def _ca_files(self, name: str, ca: trustme.CA) -> CaFiles:
        name = self._claim(name)
        pem = ca.cert_pem.bytes()
        path = self.directory / f"{name}.pem"
        path.write_bytes(pem)
        return CaFiles(ca=ca, cert_pem=pem, cert_path=path, key_pem=ca.private_key_pem.bytes())

    def issue(self, name: str, *identities: str, ca: CaFiles | None = None,
              not_before: datetime.datetime | None = None,
              not_after: datetime.datetime | None = None,
              common_name: str | None = None,
              key_type: trustme.KeyType = RSA) -> CertFiles:
        """A leaf signed by `ca` (default: the main CA), written as <name>.pem/.key/-chain.pem
        (<name>-2... if that name was taken).

        not_before / not_after (aware datetimes) set the validity window, for the modem-clock
        tests: e.g. a certificate valid only in 2019, or one not valid until 2030 (trustme's
        default window ends in the year 3000).
        """
        name = self._claim(name)
        issuer = (ca or self.ca).ca
        leaf = issuer.issue_cert(*identities, common_name=common_name, not_before=not_before,
                                 not_after=not_after, key_type=key_type)
        cert_pem = leaf.cert_chain_pems[0].bytes()
        # cert_chain_pems is leaf then intermediates, never the root: what a server sends.
        chain_pem = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
        key_pem = leaf.private_key_pem.bytes()
        paths = [self.directory / f"{name}{suffix}" for suffix in (".pem", ".key", "-chain.pem")]
        for path, data in zip(paths, (cert_pem, key_pem, chain_pem)):
            path.write_bytes(data)
        return CertFiles(cert_pem=cert_pem, key_pem=key_pem, chain_pem=chain_pem,
                         cert_path=paths[0], key_path=paths[1], chain_path=paths[2], leaf=leaf)

    def issue_window(self, name: str, not_before: datetime.datetime,
                     not_after: datetime.datetime, **kwargs) -> CertFiles:
        """A server leaf for SERVER_NAMES valid exactly from not_before to not_after."""
        return self.issue(name, *SERVER_NAMES, not_before=not_before, not_after=not_after,
                          **kwargs)


def make_pki(directory: str | Path | None = None) -> Pki:
    return Pki(directory)


def utc(year: int, month: int = 1, day: int = 1, hour: int = 0, minute: int = 0,
        second: int = 0) -> datetime.datetime:
    """Shorthand for the aware datetimes the validity windows take."""
    return datetime.datetime(year, month, day, hour, minute, second,
                             tzinfo=datetime.timezone.utc)


_default_pki: Pki | None = None
_default_lock = threading.Lock()


def default_pki() -> Pki:
    """One Pki shared by the whole process (RSA keys take a while to make)."""
    global _default_pki
    with _default_lock:
        if _default_pki is None:
            _default_pki = Pki()
        return _default_pki


# --- what trustme cannot make -----------------------------------------------------------------
NOW = datetime.datetime.now(datetime.timezone.utc)


@dataclass
class Issued:
    """A certificate from make_cert() and its (ECDSA P-256) key."""
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
              not_after=None, signing_key=None, key=None, subject_cn: str | None = None) -> Issued:
    """issuer None = self-signed. signing_key overrides the issuer's key (bad signature).
    names become SANs (IP addresses as such; an x509.GeneralName as given). Default window:
    yesterday to a year on. key: the certificate's own (default: a new P-256 key);
    subject_cn: a subject CN other than cn (a certificate whose name differs from its label)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = _name(subject_cn or cn)
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(issuer.cert.subject if issuer else subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number()))
    builder = builder.not_valid_before(not_before or NOW - datetime.timedelta(days=1))
    builder = builder.not_valid_after(not_after or NOW + datetime.timedelta(days=365))
    builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if names:
        sans = []
        for n in names:
            if isinstance(n, x509.GeneralName):
                sans.append(n)
                continue
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    signer = signing_key or (issuer.key if issuer else key)
    return Issued(builder.sign(signer, hashes.SHA256()), key)


class ServerIdentity:
    """A make_cert() leaf and the chain a server sends with it, for TlsServer(cert=...)."""

    def __init__(self, leaf: Issued, *chain: Issued) -> None:
        self.leaf = leaf
        self.chain = chain

    def configure_cert(self, ctx: ssl.SSLContext) -> None:
        # load_cert_chain takes files only.
        with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as f:
            f.write(self.leaf.cert_pem + b"".join(c.cert_pem for c in self.chain) + self.leaf.key_pem)
        try:
            ctx.load_cert_chain(f.name)
        finally:
            os.unlink(f.name)
