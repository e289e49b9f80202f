"""The EC2x cipher-suite table (SSL Application Note §1.1 Table 3 / §2.2.1) and its
mapping onto the cipher suites of the bundled Mbed TLS build.

IANA ids and names are the ones the manual lists (the OCR'd manual has typos; these
are the registry spellings). Mbed TLS names its suites with dashes instead of
underscores, which is all the mapping is; `suite_available()` asks the library.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

ALL_SUITES_CODE = 0xFFFF  # AT+QSSLCFG="ciphersuite",<ctx>,0XFFFF = "every suite of the table"


@dataclass(frozen=True)
class CipherSuite:
    id: int
    iana_name: str

    @property
    def mbedtls_name(self) -> str:
        return mbedtls_name_for(self.iana_name)

    @property
    def code(self) -> str:
        """The spelling AT+QSSLCFG uses for it: 0X0035, 0XC02F."""
        return f"0X{self.id:04X}"


def mbedtls_name_for(iana_name: str) -> str:
    return iana_name.replace("_", "-")


def iana_name_for(mbedtls_name: str) -> str:
    return mbedtls_name.replace("-", "_")


# Manual order: it is also the offer order when the context says 0XFFFF.
_TABLE_ROWS = (
    (0x0035, "TLS_RSA_WITH_AES_256_CBC_SHA"),
    (0x002F, "TLS_RSA_WITH_AES_128_CBC_SHA"),
    (0x0005, "TLS_RSA_WITH_RC4_128_SHA"),
    (0x0004, "TLS_RSA_WITH_RC4_128_MD5"),
    (0x000A, "TLS_RSA_WITH_3DES_EDE_CBC_SHA"),
    (0x003D, "TLS_RSA_WITH_AES_256_CBC_SHA256"),
    (0xC002, "TLS_ECDH_ECDSA_WITH_RC4_128_SHA"),
    (0xC003, "TLS_ECDH_ECDSA_WITH_3DES_EDE_CBC_SHA"),
    (0xC004, "TLS_ECDH_ECDSA_WITH_AES_128_CBC_SHA"),
    (0xC005, "TLS_ECDH_ECDSA_WITH_AES_256_CBC_SHA"),
    (0xC007, "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA"),
    (0xC008, "TLS_ECDHE_ECDSA_WITH_3DES_EDE_CBC_SHA"),
    (0xC009, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"),
    (0xC00A, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"),
    (0xC011, "TLS_ECDHE_RSA_WITH_RC4_128_SHA"),
    (0xC012, "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA"),
    (0xC013, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"),
    (0xC014, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"),
    (0xC00C, "TLS_ECDH_RSA_WITH_RC4_128_SHA"),
    (0xC00D, "TLS_ECDH_RSA_WITH_3DES_EDE_CBC_SHA"),
    (0xC00E, "TLS_ECDH_RSA_WITH_AES_128_CBC_SHA"),
    (0xC00F, "TLS_ECDH_RSA_WITH_AES_256_CBC_SHA"),
    (0xC023, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256"),
    (0xC024, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384"),
    (0xC025, "TLS_ECDH_ECDSA_WITH_AES_128_CBC_SHA256"),
    (0xC026, "TLS_ECDH_ECDSA_WITH_AES_256_CBC_SHA384"),
    (0xC027, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256"),
    (0xC028, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384"),
    (0xC029, "TLS_ECDH_RSA_WITH_AES_128_CBC_SHA256"),
    (0xC02A, "TLS_ECDH_RSA_WITH_AES_256_CBC_SHA384"),
    (0xC02F, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
)

# id -> CipherSuite, in manual order (dicts keep insertion order).
CIPHER_TABLE: dict[int, CipherSuite] = {
    suite_id: CipherSuite(suite_id, name) for suite_id, name in _TABLE_ROWS
}


@functools.lru_cache(maxsize=1)
def _public_suites() -> frozenset[str]:
    """The wrapper's suite list: fixed for the process (it was rebuilt ~65 times per
    handshake, about 7 ms of each, before it was cached)."""
    import mbedtls.tls

    return frozenset(mbedtls.tls.ciphers_available())


def suite_available(suite_id: int) -> bool:
    """True when the suite can be offered through the wrapper's public API (name list).

    RC4 and 3DES suites are compiled into the bundled library but left out of its
    default list: only tls_engine.native can offer them (see `suite_offerable`).
    """
    name = suite_name(suite_id)
    return name is not None and mbedtls_name_for(name) in _public_suites()


def suite_offerable(suite_id: int) -> bool:
    """True when this process can put the suite in a ClientHello at all."""
    if suite_available(suite_id):
        return True
    from . import native  # lazy: the first import runs native's self-check

    return suite_id in CIPHER_TABLE and native.available()


def suite_name(suite_id: int) -> str | None:
    """IANA-style name for an id: from the table, else from the library's registry."""
    if suite_id in CIPHER_TABLE:
        return CIPHER_TABLE[suite_id].iana_name
    from . import native  # the id <-> name registry is a private name of the wrapper

    name = native.ciphersuite_name(suite_id)
    return None if name is None else iana_name_for(name)


# Mbed TLS name -> table id: the negotiated suite is looked up once per handshake.
_TABLE_BY_MBEDTLS_NAME = {suite.mbedtls_name: suite.id for suite in CIPHER_TABLE.values()}


def suite_id_for_mbedtls_name(mbedtls_name: str) -> int:
    """Negotiated suite as Mbed TLS reports it -> IANA id (0 when unknown)."""
    suite_id = _TABLE_BY_MBEDTLS_NAME.get(mbedtls_name)
    if suite_id is not None:
        return suite_id
    from . import native

    return native.ciphersuite_id(mbedtls_name)


def describe(suite_id: int) -> str:
    """'0x0005 TLS_RSA_WITH_RC4_128_SHA' for failure reasons."""
    return f"0x{suite_id:04X} {suite_name(suite_id) or 'unknown suite'}"


def default_offer() -> tuple[int, ...]:
    """0XFFFF: every table suite this build can offer, in manual order (RC4/3DES
    only when tls_engine.native is usable, as on a real EC2x)."""
    return tuple(suite_id for suite_id in CIPHER_TABLE if suite_offerable(suite_id))
