"""Throw-away PKI for the test peers (trustme on top of cryptography).

All keys are RSA: the EC2x and ML302 cipher suite tables are mostly RSA key exchange /
ECDHE-RSA, which an ECDSA server key cannot serve. One ECDSA server certificate is there for
the ECDHE-ECDSA suites.
"""

from __future__ import annotations

import datetime
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import trustme

RSA = trustme.KeyType.RSA
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


@dataclass
class CaFiles:
    ca: trustme.CA
    cert_pem: bytes
    cert_path: Path
    key_pem: bytes           # a CA's own key, for tests that sign things themselves


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
        self.ca = self._ca_files("ca", trustme.CA(key_type=RSA))
        self.wrong_ca = self._ca_files("wrong_ca", trustme.CA(key_type=RSA))
        self.intermediate = self._ca_files("intermediate", self.ca.ca.create_child_ca(key_type=RSA))
        self.server = self.issue("server", *SERVER_NAMES)
        self.server_ec = self.issue("server_ec", *SERVER_NAMES, key_type=trustme.KeyType.ECDSA)
        self.client = self.issue("client", "modem-client.example", common_name="modem client")
        self.wrong_server = self.issue("wrong_server", *SERVER_NAMES, ca=self.wrong_ca)
        self.chained = self.issue("chained", *SERVER_NAMES, ca=self.intermediate)

    def cleanup(self) -> None:
        if self._cleanup is not None:
            self._cleanup()

    def _ca_files(self, name: str, ca: trustme.CA) -> CaFiles:
        pem = ca.cert_pem.bytes()
        path = self.directory / f"{name}.pem"
        path.write_bytes(pem)
        return CaFiles(ca=ca, cert_pem=pem, cert_path=path, key_pem=ca.private_key_pem.bytes())

    def issue(self, name: str, *identities: str, ca: CaFiles | None = None,
              not_before: datetime.datetime | None = None,
              not_after: datetime.datetime | None = None,
              common_name: str | None = None,
              key_type: trustme.KeyType = RSA) -> CertFiles:
        """A leaf signed by `ca` (default: the main CA), written as <name>.pem/.key/-chain.pem.

        not_before / not_after (aware datetimes) set the validity window, for the modem-clock
        tests: e.g. a certificate valid only in 2019, or one not valid until 2030.
        """
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
    """One Pki shared by the whole test run (RSA keys take a while to make)."""
    global _default_pki
    with _default_lock:
        if _default_pki is None:
            _default_pki = Pki()
        return _default_pki
