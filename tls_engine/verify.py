"""Server certificate policy for seclevel >= 1, done in Python with `cryptography`.

Mbed TLS runs with VERIFY_OPTIONAL and no trust store; this module decides instead,
because the modem checks validity dates against ITS clock (AT+CCLK) and each EC2x
relax flag must relax exactly what it names. Policy (also in tls_engine/README.md):

* Path: leaf first, then issuers looked up by subject name among the anchors
  (settings.ca_pem) first, then among the certificates the server sent, until an
  anchor is reached. A leaf byte-identical to an anchor is trusted as is.
* Each issuer must be a CA (basicConstraints CA=true; v1/v2 anchors are accepted as
  Mbed TLS does, a v1/v2 certificate the server sent is not), with keyCertSign when it has
  a keyUsage extension, within its pathLenConstraint, and must have signed its child.
  Names chain as Mbed TLS compares them (x509_name_cmp: UTF8String/PrintableString values
  equal but for ASCII letter case match).
* Mbed TLS's default certificate profile: every signature on the path below the anchor
  with SHA-224 or stronger (SHA-1, MD5: refused), every RSA key on it (the anchor's too)
  of 2048 bits or more.
* The leaf's usage for the negotiated key exchange (ssl_check_cert_usage): keyUsage, when
  present, with digitalSignature (ECDHE/DHE), keyEncipherment (RSA) or keyAgreement (ECDH);
  extendedKeyUsage, when present, with serverAuth or anyExtendedKeyUsage.
* ignore_invalid_cert_sign=1: a bad signature along the path is tolerated; the
  names must still chain to an anchor. Nothing else is relaxed.
* ignore_local_time=0: every certificate on the path (leaf, intermediates, anchor)
  must be valid at the MODEM clock; =1: dates are not looked at, nothing else changes.
* ignore_multicert_chain_verify=1: only the leaf's own link is verified: its issuer
  must be an anchor or a certificate the server sent, and must have signed it; the
  certificates above that issuer are not verified (so with an intermediate the
  anchor is not involved). Dates (if checked) apply to leaf and that issuer.
* ignore_cert_chain=1 (a BG96's "ignorecertchain"): the chain is not verified at all:
  the leaf alone is the path (who signed it, whether signatures verify, is not looked
  at); its dates (unless ignore_local_time) and its name (unless verify_hostname=False)
  are checked as ever.
* Name (unless verify_hostname=False, which skips it): as Mbed TLS (x509_crt_verify_name):
  SAN dNSName entries, or every CN when the certificate has no SAN extension; equal but for
  ASCII case, byte for byte (a trailing dot counts), or "*.<rest>" matching the host's part
  from its first dot (one label, however few follow).  IP literals (the emulator's own
  rule: Mbed TLS matches no iPAddress SAN): SAN iPAddress entries, or with no SAN a CN
  that is the literal.
"""
from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from datetime import datetime, timezone

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from .errors import BAD_CONFIG, EngineConfigError
from .records import outer_tlv
from .settings import TlsSettings

_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
_DER = Encoding.DER


def load_anchors(settings: TlsSettings) -> list[x509.Certificate]:
    """The CA file's certificates, read as the module's Mbed TLS 2.28 reads it
    (mbedtls_x509_crt_parse: _ca_walk); a file it reads only in part -- a block its PEM
    reader or X.509 parser refuses -- is a broken file (BAD_CONFIG: 552 / -1)."""
    label = settings.trust_label
    if not settings.ca_pem:
        raise EngineConfigError(BAD_CONFIG, f"seclevel {settings.seclevel} needs a CA certificate, "
                                            f"but {label} is empty")
    anchors = _ANCHORS.get(settings.ca_pem)
    if anchors is None:
        ders, refused = _ca_walk(settings.ca_pem)
        if refused or not ders:
            raise EngineConfigError(BAD_CONFIG, f"cannot parse CA certificate {label}: "
                                                f"{refused or 'no certificate Mbed TLS reads'}")
        anchors = []
        for number, der in enumerate(ders, 1):
            try:
                anchors.append(x509.load_der_x509_certificate(der))
            except ValueError as exc:
                # (Mbed TLS took it -- BER-isms old CA tools wrote -- cryptography reads
                # strict DER only: a known difference, docs/behaviour.md)
                raise EngineConfigError(BAD_CONFIG, f"cannot parse CA certificate {label}: "
                                                    f"certificate {number}: {exc}") from None
        if len(_ANCHORS) >= _ANCHORS_MAX:
            del _ANCHORS[next(iter(_ANCHORS))]          # the oldest
        _ANCHORS[settings.ca_pem] = anchors
    return list(anchors)


_PEM_END = b"-----END CERTIFICATE-----"


@functools.lru_cache(maxsize=16)
def _ca_walk(ca_pem: bytes) -> tuple[tuple[bytes, ...], str]:
    """(the DER of each certificate Mbed TLS 2.28's mbedtls_x509_crt_parse keeps of a PEM CA
    file, why it read the file only in part or ""): the file is a C string (it ends at its
    first NUL); each turn finds the first BEGIN and the first END of what is left (an END
    before the BEGIN, a BEGIN without END, a header with no line end after it: the reading
    stops there, quietly); a block whose base64 (_pem_body) or X.509 (Mbed TLS's own parser,
    CRT.from_DER) it refuses is counted failed and the reading goes on."""
    import mbedtls.x509 as mbx509
    from mbedtls.exceptions import TLSError

    data = ca_pem.split(b"\0", 1)[0]
    if _PEM_BEGIN not in data:
        # No PEM header before the first NUL (strstr): mbedtls_x509_crt_parse takes the
        # buffer as ONE DER certificate (mbedtls_x509_crt_parse_der: its first SEQUENCE,
        # the bytes after it not read) -- a CA file written in DER.
        der = outer_tlv(ca_pem)
        try:
            mbx509.CRT.from_DER(der)
        except (TLSError, ValueError) as exc:
            return (), f"neither a PEM certificate nor one DER certificate Mbed TLS reads ({exc})"
        return (der,), ""
    ders: list[bytes] = []
    refused = ""
    number = 0
    while len(data) > 0:
        s1, s2 = data.find(_PEM_BEGIN), data.find(_PEM_END)
        if s1 < 0 or s2 < 0 or s2 <= s1:
            break
        at = s1 + len(_PEM_BEGIN)
        for optional in (b" ", b"\r"):
            if data[at:at + 1] == optional:
                at += 1
        if data[at:at + 1] != b"\n":
            break                                     # (MBEDTLS_ERR_PEM_NO_HEADER_FOOTER_PRESENT)
        end = s2 + len(_PEM_END)
        for optional in (b" ", b"\r", b"\n"):
            if data[end:end + 1] == optional:
                end += 1
        body, data = _pem_body(data[at + 1:s2]), data[end:]
        number += 1
        if isinstance(body, str):
            refused = refused or f"certificate {number} is not one Mbed TLS reads ({body})"
            continue
        try:
            mbx509.CRT.from_DER(body)
        except (TLSError, ValueError) as exc:
            refused = refused or f"certificate {number} is not one Mbed TLS reads ({exc})"
            continue
        ders.append(outer_tlv(body))
    return tuple(ders), refused


_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def _pem_body(body: bytes) -> bytes | str:
    """The DER of a PEM block's body (between the header's line end and the footer) as Mbed TLS
    2.28's mbedtls_base64_decode takes it, or why it refuses it: spaces only right before a
    line's end (a space inside a line -- an indented PEM -- is an error), CR only before LF,
    empty lines skipped, nothing but base64."""
    import base64
    import binascii

    chars = []
    for line in body.split(b"\n"):
        line = line[:-1] if line.endswith(b"\r") else line
        text = line.rstrip(b" ")
        if b" " in text or b"\r" in text:
            return "a space inside a base64 line" if b" " in text else "a CR not before a LF"
        if not set(text) <= _B64:
            return "a character that is not base64"
        chars.append(text)
    joined = b"".join(chars)
    pad = joined.find(b"=")
    if pad >= 0 and (len(joined) - pad > 2 or joined[pad:].strip(b"=")):
        return "'=' padding past two, or data after it"     # (mbedtls_base64_decode: j > 2)
    try:
        return base64.b64decode(joined, validate=True)
    except (binascii.Error, ValueError) as exc:
        return f"bad base64: {exc}"


# Parsed trust anchors keyed by the CA file's CONTENT (the bytes the emulator read at this
# open): a file replaced with AT+QFUPL is other bytes, hence parsed anew; the same bundle
# opened again is not parsed again.  Certificates are immutable; callers get a new list.
_ANCHORS: dict[bytes, list[x509.Certificate]] = {}
_ANCHORS_MAX = 16


def parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def describe_cert(cert: x509.Certificate) -> str:
    try:
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if cns:
            return f"CN={cns[0].value}"
        return cert.subject.rfc4514_string() or "(empty subject)"
    except ValueError:            # (a name value that is not text: Mbed TLS keeps its bytes)
        return f"serial 0x{cert.serial_number:X} (a subject that is not text)"


def _fmt(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


# The alert Mbed TLS itself would send for the same verify flags (ssl_tls.c,
# ssl_parse_certificate_verify): NOT_TRUSTED -> unknown_ca, EXPIRED -> certificate_expired,
# CN_MISMATCH -> bad_certificate, KEY_USAGE / EXT_KEY_USAGE / BAD_KEY / BAD_PK ->
# unsupported_certificate, anything else (FUTURE, BAD_MD) -> certificate_unknown.
ALERT_BAD_CERT = 42
ALERT_UNSUPPORTED_CERT = 43        # KEY_USAGE, EXT_KEY_USAGE, BAD_KEY, BAD_PK
ALERT_CERT_EXPIRED = 45
ALERT_CERT_UNKNOWN = 46
ALERT_UNKNOWN_CA = 48
# A chain too long for Mbed TLS (more than MBEDTLS_X509_MAX_INTERMEDIATE_CA intermediates below
# an untrusted parent) is a fatal error that sets every flag, BADCERT_OTHER included: access_denied.
ALERT_ACCESS_DENIED = 49
# The one alert Mbed TLS 2.28 sends for a chain with several faults (ssl_parse_certificate_verify
# tests the flags in this order): other (the fatal error above), name mismatch, key usage / key,
# expired, not trusted, anything else (a date not yet valid, a weak signature hash).
_ALERT_PRECEDENCE = (ALERT_ACCESS_DENIED, ALERT_BAD_CERT, ALERT_UNSUPPORTED_CERT, ALERT_CERT_EXPIRED,
                     ALERT_UNKNOWN_CA, ALERT_CERT_UNKNOWN)


@dataclass
class VerifyProblem:
    reason: str
    alert: int


@dataclass
class _Link:
    cert: x509.Certificate
    is_anchor: bool                # a trusted certificate (else one the server sent)
    index: int = -1                # its place among those the server sent


class ChainVerifier:
    def __init__(self, settings: TlsSettings, anchors: list[x509.Certificate]) -> None:
        self.settings = settings
        self.anchors = anchors
        self._anchor_set: set[bytes] | None = None

    def now(self) -> datetime:
        moment = self.settings.clock() if self.settings.clock else datetime.now(timezone.utc)
        if moment.tzinfo is None:  # a naive modem clock is taken as UTC
            moment = moment.replace(tzinfo=timezone.utc)
        return moment

    def verify(self, chain_der: list[bytes], suite: str | None = None) -> VerifyProblem | None:
        """None when the server chain is acceptable, else what is wrong with it.  suite: the
        IANA name of the suite the server chose (its key exchange says what the leaf's key
        must be fit for); None: the leaf's keyUsage is not looked at."""
        if not chain_der:
            return VerifyProblem("server sent an empty certificate chain", ALERT_BAD_CERT)
        try:
            chain = [x509.load_der_x509_certificate(der) for der in chain_der]
        except ValueError as exc:
            return VerifyProblem(f"server certificate cannot be parsed: {exc}", ALERT_BAD_CERT)
        for position, cert in enumerate(chain):
            problem = _unparsable(cert)
            if problem:
                who = "server certificate" if position == 0 else f"certificate {position + 1} of the chain"
                return VerifyProblem(f"{who} {describe_cert(cert)}: {problem} (Mbed TLS 2.28 cannot "
                                     f"parse it, and ends the handshake on any certificate it sends)",
                                     ALERT_BAD_CERT)
        leaf = chain[0]
        # Every fault is found, as Mbed TLS flags them all, and the one reported is the one
        # whose alert Mbed TLS sends (_ALERT_PRECEDENCE).  An untrusted path's dates, hashes
        # and issuer keys are those of the certificates it reached (Mbed TLS judges each one
        # on its way up, past an issuer whose signature fails too).
        faults: list[tuple[str, int]] = []
        if self.settings.ignore_cert_chain:
            path = [leaf]
        else:
            path, problem, alert = self._build_path(leaf, chain[1:])
            if problem:
                faults.append((problem, alert))
            faults.extend(_profile_problems(path, self._is_anchor(path[-1])))
        problem = _key_problem(leaf, "server certificate") or _usage_problem(leaf, suite)
        if problem:
            faults.append((problem, ALERT_UNSUPPORTED_CERT))
        if not self.settings.ignore_local_time:
            problem, alert = self._check_dates(path)
            if problem:
                faults.append((problem, alert))
        if self.settings.verify_hostname:   # (else a firmware that never gives its TLS library the name)
            problem = self._check_name(leaf)
            if problem:
                faults.append((problem, ALERT_BAD_CERT))
        if not faults:
            return None
        return VerifyProblem(*min(faults, key=lambda fault: _ALERT_PRECEDENCE.index(fault[1])))

    def check_dates_of(self, leaf_der: bytes) -> VerifyProblem | None:
        """Only the validity of one certificate at the modem clock (unless ignore_local_time)."""
        if self.settings.ignore_local_time:
            return None
        problem, alert = self._check_dates([x509.load_der_x509_certificate(leaf_der)])
        return VerifyProblem(problem, alert) if problem else None

    def check_usage(self, leaf_der: bytes, suite: str | None) -> VerifyProblem | None:
        """Only the leaf's usage for the negotiated suite (a DTLS Certificate can be judged
        before its ServerHello arrives: the session asks again at the end)."""
        problem = _usage_problem(x509.load_der_x509_certificate(leaf_der), suite)
        return VerifyProblem(problem, ALERT_UNSUPPORTED_CERT) if problem else None

    def _anchors_der(self) -> set[bytes]:
        if self._anchor_set is None:
            self._anchor_set = {a.public_bytes(_DER) for a in self.anchors}
        return self._anchor_set

    def _is_anchor(self, cert: x509.Certificate) -> bool:
        return cert.public_bytes(_DER) in self._anchors_der()

    # --- path --------------------------------------------------------------

    def _build_path(self, leaf, sent) -> tuple[list[x509.Certificate], str | None, int]:
        """The path from the leaf up, as Mbed TLS walks it (x509_crt_verify_chain), with its
        fault and that fault's alert (None, 0: it reaches a trusted certificate).  A sent
        issuer whose signature fails is on the path all the same (the walk goes on above
        it, the path is not trusted)."""
        if self._is_anchor(leaf) and same_name_der(_issuer_der(leaf), _subject_der(leaf)):
            return [leaf], None, 0     # (a trusted end entity: Mbed TLS takes it only self-issued)
        label = self.settings.trust_label
        path = [leaf]
        child = leaf
        max_depth = 2 if self.settings.ignore_multicert_chain_verify else 10
        self_issued = 0              # (Mbed TLS's self_cnt: self-issued CAs below, not counted
        after = 0                    # against a pathLenConstraint; counted after the search)
        fault = None                 # a signature that failed on the way
        while len(path) < max_depth:
            link, bad_sig = self._find_issuer(child, sent[after:], len(path) - 1 - self_issued, after)
            if len(path) > 1 and same_name_der(_issuer_der(child), _subject_der(child)):
                self_issued += 1
            if fault is None and (bad_sig is not None or link is None):   # (the path's first fault)
                who = "server certificate" if child is leaf else f"intermediate {describe_cert(child)}"
                if bad_sig is not None:
                    fault = f"{who}: signature of {describe_cert(child)} does not verify " \
                            f"with its issuer {describe_cert(bad_sig)} (check {label})"
                elif _self_issued(child):
                    # (its own issuer: a root the server sent, or self-signed -- not trusted)
                    fault = f"{who} not signed by {label} ({describe_cert(child)} is self-signed " \
                            f"and not among the trusted certificates)"
                elif any(same_name_der(_subject_der(c), _issuer_der(child)) for c in sent[:max(after - 1, 0)]):
                    # (sent, but before the certificate it signed: Mbed TLS looks only after it)
                    fault = f"{who} not signed by {label} (issuer {child.issuer.rfc4514_string()} " \
                            f"was sent before it, where Mbed TLS does not look: the server must " \
                            f"send each certificate before its issuer)"
                else:
                    fault = f"{who} not signed by {label} (issuer {child.issuer.rfc4514_string()} " \
                            f"not found among the trusted or sent certificates)"
            if link is None:
                return path, fault, ALERT_UNKNOWN_CA
            path.append(link.cert)
            if link.is_anchor or self.settings.ignore_multicert_chain_verify:
                return path, fault, ALERT_UNKNOWN_CA if fault else 0
            child = link.cert
            after = link.index + 1     # (Mbed TLS looks for a parent after the child only: the
                                       # walk ends, and a duplicate sent later is walked as in Mbed TLS)
        return path, (f"server certificate chain of {len(path)} certificates does not reach {label} "
                      f"(Mbed TLS walks at most 8 intermediates)"), ALERT_ACCESS_DENIED

    def _find_issuer(self, child, sent, below: int = 0,
                     offset: int = 0) -> tuple[_Link | None, x509.Certificate | None]:
        """(parent, candidate whose signature failed): the issuer of child, or a sent
        candidate whose signature fails (taken as the parent all the same: both), or no
        parent and a trusted candidate whose signature failed (for the reason text).  As
        Mbed TLS (x509_crt_find_parent_in): the trusted certificates first, then those the
        server sent after the child (`sent`, the first at `offset` in the server's list);
        within each, a candidate valid at the modem clock before one that is not (a renewed
        CA or intermediate next to its expired predecessor, in either order), which is taken
        only when no other is.  A trusted candidate whose signature fails is passed over; a
        sent one is the parent all the same (Mbed TLS takes the first that fits by name, CA
        bit and path length), and the path fails on its signature.  below: the intermediates
        under the candidate that its pathLenConstraint counts."""
        now = None if self.settings.ignore_local_time else self.now()
        bad_signature = None
        issuer = _issuer_der(child)
        for candidates in ([_Link(a, True) for a in self.anchors],
                           [_Link(c, False, offset + i) for i, c in enumerate(sent)]):
            out_of_date = None
            for link in candidates:
                if (not same_name_der(_subject_der(link.cert), issuer) or not _can_issue(link.cert, link.is_anchor)
                        or _path_length(link.cert) < below):
                    continue
                signed = self._signature_ok(child, link.cert) or self.settings.ignore_invalid_cert_sign
                if not signed and link.is_anchor:
                    bad_signature = bad_signature or link.cert
                    continue
                if now is not None and _dated(link.cert, now) is not None:
                    out_of_date = out_of_date or (link, signed)
                    continue
                return (link, None) if signed else (link, link.cert)
            if out_of_date is not None:
                link, signed = out_of_date
                return (link, None) if signed else (link, link.cert)
        return None, bad_signature

    @staticmethod
    def _signature_ok(child, issuer) -> bool:
        """Whether issuer's key verifies child's signature.  cryptography's own check also
        wants the names byte-equal and declines SHA-1: then the signature alone is checked
        (the names were matched as Mbed TLS matches them; the profile's verdict on the hash
        is _profile_problems')."""
        try:
            child.verify_directly_issued_by(issuer)
            return True
        except InvalidSignature:
            return False
        except (UnsupportedAlgorithm, ValueError, TypeError):
            return _signature_ok_any_hash(child, issuer)

    # --- dates -------------------------------------------------------------

    def _check_dates(self, path) -> tuple[str | None, int]:
        """The first certificate of the path that expired, else the first not yet valid
        (Mbed TLS flags both; EXPIRED decides its alert)."""
        now = self.now()
        early = None
        for position, cert in enumerate(path):
            who = "server certificate" if position == 0 else f"issuer certificate {describe_cert(cert)}"
            fault = _dated(cert, now)
            if fault == "expired":
                return (f"{who} expired at modem clock {_fmt(now)} "
                        f"(notAfter {_fmt(cert.not_valid_after_utc)})", ALERT_CERT_EXPIRED)
            if fault == "not yet valid" and early is None:
                early = (f"{who} not yet valid at modem clock {_fmt(now)} "
                         f"(notBefore {_fmt(cert.not_valid_before_utc)})", ALERT_CERT_UNKNOWN)
        return early or (None, 0)

    # --- name --------------------------------------------------------------

    def _check_name(self, leaf) -> str | None:
        host = self.settings.server_name
        if matches_host(leaf, host):
            return None
        return f"server certificate does not match {host!r} (it is for {', '.join(cert_names(leaf)) or 'no name'})"


def _dated(cert: x509.Certificate, now) -> str | None:
    """Why cert is not valid at now ("expired", "not yet valid"); None: it is.  (The one
    test of a validity period: the chain's check and the choice between issuers.)  Whole
    seconds, as Mbed TLS compares (x509_time_is_past / _is_future): a certificate is valid
    through the second of its notAfter (RFC 5280 4.1.2.5: inclusive), whatever fraction of
    that second the modem clock has run since AT+CCLK set it."""
    now = now.replace(microsecond=0)
    if now > cert.not_valid_after_utc:
        return "expired"
    if now < cert.not_valid_before_utc:
        return "not yet valid"
    return None


def _can_issue(cert: x509.Certificate, trusted: bool) -> bool:
    """A CA: basicConstraints CA=true and, when it has a keyUsage extension, keyCertSign; a
    v1/v2 certificate (no extensions) only when it is a trust anchor (Mbed TLS waives the CA
    bit for a locally trusted one only: x509_crt_check_parent with `top`), never one the
    server sent."""
    if cert.version != x509.Version.v3:
        return trusted
    try:
        if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return False
    except x509.ExtensionNotFound:
        return False
    return _usage_allows(cert, "key_cert_sign")


# The extensions Mbed TLS 2.28 parses (x509_get_crt_ext); an unknown one marked critical makes
# the certificate unparsable (MBEDTLS_ERR_X509_INVALID_EXTENSIONS), a known one is checked.
_PARSED_EXTENSIONS = {ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE, ExtensionOID.EXTENDED_KEY_USAGE,
                      ExtensionOID.SUBJECT_ALTERNATIVE_NAME, ExtensionOID.CERTIFICATE_POLICIES,
                      x509.ObjectIdentifier("2.16.840.1.113730.1.1")}      # Netscape cert type


def _unparsable(cert: x509.Certificate) -> str | None:
    """Why Mbed TLS 2.28 would not parse `cert` (mbedtls_x509_crt_parse_der): a public key
    other than RSA or EC (an Ed25519 key: PK_UNKNOWN_PK_ALG), RSASSA-PSS signature parameters
    it cannot read, an unknown critical extension, a critical certificatePolicies naming
    another policy than anyPolicy (FEATURE_UNAVAILABLE)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return "a public key of an unknown algorithm"
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        return f"a {type(key).__name__.removesuffix('PublicKey').lstrip('_')} public key"
    try:
        cert.signature_hash_algorithm
    except ValueError:            # (x509_get_rsassa_pss_params fails: the whole parse does)
        return "invalid RSASSA-PSS signature parameters"
    except UnsupportedAlgorithm:
        pass
    for ext in cert.extensions:
        if not ext.critical:
            continue
        if ext.oid not in _PARSED_EXTENSIONS:
            return f"an unknown critical extension {ext.oid.dotted_string}"
        if ext.oid == ExtensionOID.CERTIFICATE_POLICIES and any(
                policy.policy_identifier != x509.ObjectIdentifier("2.5.29.32.0") for policy in ext.value):
            return "a critical certificatePolicies naming a policy other than anyPolicy"
    return None


def _path_length(cert: x509.Certificate) -> float:
    """The intermediates a CA may have below it (pathLenConstraint; none: no limit)."""
    constraints = _extension(cert, x509.BasicConstraints)
    if constraints is None or constraints.path_length is None:
        return float("inf")
    return constraints.path_length


def _extension(cert: x509.Certificate, kind):
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


_CASE_FOLDED = {12, 19}           # UTF8String, PrintableString (ASN.1 tags)


def same_name(a: x509.Name, b: x509.Name) -> bool:
    """Mbed TLS's x509_name_cmp: the same attributes in the same sets, in order, each value
    byte-equal with the same string type, or -- both UTF8String or PrintableString -- equal
    but for the case of ASCII letters (RFC 5280 7.1 asks for more folding; Mbed TLS does this).
    (cryptography's Name == ignores the string types: the DER is compared.)"""
    return same_name_der(a.public_bytes(), b.public_bytes())


def same_name_der(der_a: bytes, der_b: bytes) -> bool:
    if der_a == der_b:
        return True
    try:
        items_a, folded_a = _name_items(der_a)
        items_b, folded_b = _name_items(der_b)
    except (ValueError, IndexError):
        return False
    if folded_a != folded_b:        # (cheap: no case-folded match possible)
        return False
    for (_, _, tag_a, value_a), (_, _, tag_b, value_b) in zip(items_a, items_b):
        if tag_a == tag_b and value_a == value_b:
            continue
        if tag_a not in _CASE_FOLDED or tag_b not in _CASE_FOLDED or not _ascii_case_equal(value_a, value_b):
            return False
    return True


@functools.lru_cache(maxsize=1024)
def _subject_der(cert: x509.Certificate) -> bytes:
    return cert.subject.public_bytes()          # (a Certificate hashes and compares by its DER)


@functools.lru_cache(maxsize=1024)
def _issuer_der(cert: x509.Certificate) -> bytes:
    return cert.issuer.public_bytes()


def _self_issued(cert: x509.Certificate) -> bool:
    """Its issuer is its subject (False when either name cannot be read: for a reason only)."""
    try:
        return same_name_der(_issuer_der(cert), _subject_der(cert))
    except ValueError:
        return False


@functools.lru_cache(maxsize=1024)
def _name_items(der: bytes) -> tuple[tuple[tuple[int, bytes, int, bytes], ...], tuple]:
    """A Name's DER as (set number, OID bytes, value tag, value bytes) per attribute, and the
    same with the values lower-cased and no tags: names whose second parts differ never match
    (a bundle's hundreds of anchors, each issuer search)."""
    items = []
    _, body, _ = _tlv(der, 0)                                   # SEQUENCE of RDNs
    at, number = 0, 0
    while at < len(body):
        _, rdn, at = _tlv(body, at)                             # SET of attributes
        inner = 0
        while inner < len(rdn):
            _, attribute, inner = _tlv(rdn, inner)              # SEQUENCE {OID, value}
            _, oid, after = _tlv(attribute, 0)
            tag, value, _ = _tlv(attribute, after)
            items.append((number, oid, tag, value))
        number += 1
    return tuple(items), tuple((n, oid, value.lower()) for n, oid, _, value in items)


def _tlv(der: bytes, at: int) -> tuple[int, bytes, int]:
    """(tag, contents, offset after) of the DER element at `at`."""
    tag, length = der[at], der[at + 1]
    at += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(der[at:at + count], "big")
        at += count
    if at + length > len(der):
        raise ValueError("truncated DER")
    return tag, der[at:at + length], at + length


def _ascii_case_equal(x: bytes, y: bytes) -> bool:
    """Mbed TLS's x509_memcasecmp."""
    return len(x) == len(y) and all(
        c == d or (c ^ d == 32 and (65 <= c <= 90 or 97 <= c <= 122)) for c, d in zip(x, y))


def _signature_ok_any_hash(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """The signature alone (RSA PKCS#1 v1.5 or PSS, ECDSA) with the child's hash, whatever
    the names and the hash."""
    from cryptography.hazmat.primitives.asymmetric import ec

    key = issuer.public_key()
    try:
        params = child.signature_algorithm_parameters      # PKCS1v15 / PSS, or ECDSA(hash)
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(child.signature, child.tbs_certificate_bytes, params, child.signature_hash_algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(child.signature, child.tbs_certificate_bytes, params)
        else:
            return False
        return True
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False


# Mbed TLS 2.28's mbedtls_x509_crt_profile_default (x509_crt.c): SHA-2 signatures only,
# any public-key algorithm and curve, RSA keys of 2048 bits or more.
PROFILE_HASHES = frozenset({"sha224", "sha256", "sha384", "sha512"})
PROFILE_RSA_MIN_BITS = 2048


def _key_problem(cert: x509.Certificate, who: str) -> str | None:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < PROFILE_RSA_MIN_BITS:
        return (f"{who} {describe_cert(cert)} has a {key.key_size}-bit RSA key (Mbed TLS's "
                f"default profile: at least {PROFILE_RSA_MIN_BITS})")
    return None


def _profile_problems(path: list[x509.Certificate], top_trusted: bool) -> list[tuple[str, int]]:
    """What Mbed TLS's default profile refuses on a path (built, or as far as it reached): a
    signature hash below SHA-224 on a certificate under the anchor (BAD_MD), an RSA key under
    2048 bits on an issuer (BAD_KEY; the leaf's own key: verify()) -- the first of each."""
    # (a trusted root ends the path unjudged; a leaf that is itself trusted is judged: Mbed TLS
    # checks a child's hash before its "locally trusted end entity" return)
    faults = []
    signed = path[:-1] if top_trusted and len(path) > 1 else path
    for position, cert in enumerate(signed):
        try:
            algorithm = cert.signature_hash_algorithm
        except UnsupportedAlgorithm:
            algorithm = None
        name = getattr(algorithm, "name", None)
        if name is not None and name not in PROFILE_HASHES:
            who = "server certificate" if position == 0 else f"intermediate {describe_cert(cert)}"
            faults.append((f"{who} is signed with {name.upper()} (Mbed TLS's default profile accepts "
                           f"SHA-224 or stronger only)", ALERT_CERT_UNKNOWN))
            break
    for cert in path[1:]:
        problem = _key_problem(cert, "issuer certificate")
        if problem:
            faults.append((problem, ALERT_UNSUPPORTED_CERT))
            break
    return faults


def _usage_problem(leaf: x509.Certificate, suite: str | None) -> str | None:
    """Mbed TLS's ssl_check_cert_usage for a server certificate: keyUsage (when present)
    fit for the suite's key exchange, extendedKeyUsage (when present) naming serverAuth."""
    eku = _extension(leaf, x509.ExtendedKeyUsage)
    if eku is not None and not ({ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
                                & set(eku)):
        return (f"server certificate {describe_cert(leaf)} is not for TLS servers (extendedKeyUsage "
                f"without serverAuth)")
    need = _usage_for(suite)
    if not _usage_allows(leaf, need):
        what = f"lacks {need} (needed by {suite})" if need else "has encipherOnly / decipherOnly"
        return f"server certificate {describe_cert(leaf)} keyUsage {what}"
    return None


_KEY_USAGE_BITS = {"digital_signature": 0, "content_commitment": 1, "key_encipherment": 2,
                   "data_encipherment": 3, "key_agreement": 4, "key_cert_sign": 5, "crl_sign": 6,
                   "encipher_only": 7, "decipher_only": 8}
_MAY_ONLY = (1 << 7) | (1 << 8)   # encipherOnly, decipherOnly


def _usage_allows(cert: x509.Certificate, need: str | None) -> bool:
    """Mbed TLS's mbedtls_x509_crt_check_key_usage: no keyUsage extension allows all; else
    the bit needed must be set, and encipherOnly / decipherOnly must not be (nobody asks
    for them).  Bits read from the extension's DER (cryptography will not say
    encipherOnly without keyAgreement)."""
    usage = _extension(cert, x509.KeyUsage)
    if usage is None:
        return True
    bits = _key_usage_bits(usage)
    if bits & _MAY_ONLY:
        return False
    return need is None or bool(bits & (1 << _KEY_USAGE_BITS[need]))


def _key_usage_bits(usage: x509.KeyUsage) -> int:
    """Bit n of the result = KeyUsage bit n (RFC 5280: 0 digitalSignature .. 8 decipherOnly)."""
    _, body, _ = _tlv(usage.public_bytes(), 0)            # BIT STRING: unused-bit count, bytes
    bits = 0
    for index, byte in enumerate(body[1:]):
        for bit in range(8):
            if byte & (0x80 >> bit):
                bits |= 1 << (index * 8 + bit)
    return bits


def _usage_for(suite: str | None) -> str | None:
    """The keyUsage bit the suite's key exchange needs of the server's key (None: none)."""
    if not suite:
        return None
    kx = suite.removeprefix("TLS_").split("_WITH_")[0]
    if kx in ("RSA", "RSA_PSK"):
        return "key_encipherment"
    if kx in ("DHE_RSA", "ECDHE_RSA", "ECDHE_ECDSA"):
        return "digital_signature"
    if kx in ("ECDH_RSA", "ECDH_ECDSA"):
        return "key_agreement"
    return None


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        return None


def cert_names(cert: x509.Certificate) -> list[str]:
    san = _san(cert)
    if san is not None:
        return [*san.get_values_for_type(x509.DNSName),
                *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]
    try:
        return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    except ValueError:            # (a CN that is not text: no name it could be dialled by)
        return [describe_cert(cert)]


_CN_OID = bytes.fromhex("550403")      # id-at-commonName, as it sits in a Name's DER


def matches_host(cert: x509.Certificate, host: str) -> bool:
    """Mbed TLS's x509_crt_verify_name for a DNS name: the SAN's dNSName entries when the
    certificate has a SAN extension, else every CN (its raw bytes, whatever the string type).
    An IP literal (the emulator's own rule; Mbed TLS 2.28 matches no iPAddress SAN): a SAN
    iPAddress entry, or, with no SAN, a CN that is the literal."""
    ip = parse_ip(host)
    san = _san(cert)
    if ip is not None:
        if san is not None:
            return ip in san.get_values_for_type(x509.IPAddress)
        return any(_cn_matches(value, host) for value in _cn_values(cert))
    if san is not None:
        return any(dns_name_matches(pattern, host) for pattern in san.get_values_for_type(x509.DNSName))
    return any(_cn_matches(value, host) for value in _cn_values(cert))


def _cn_values(cert: x509.Certificate) -> list[bytes]:
    try:
        items, _ = _name_items(_subject_der(cert))
    except (ValueError, IndexError):
        return []
    return [value for _, oid, _, value in items if oid == _CN_OID]


def _cn_matches(value: bytes, host: str) -> bool:
    try:
        return dns_name_matches(value.decode("ascii"), host)
    except UnicodeDecodeError:             # (a BMPString's UTF-16, an accented UTF-8 name:
        return False                       # never the ASCII bytes of a host name)


def dns_name_matches(pattern: str, host: str) -> bool:
    """Mbed TLS 2.28's x509_crt_check_cn: equal but for ASCII letter case (byte for byte: a
    trailing dot counts), or a wildcard: the pattern "*.<rest>" and the host's part from its
    first dot equal to ".<rest>" -- one label, however few labels follow."""
    try:
        p, h = pattern.encode("ascii"), host.encode("ascii")
    except UnicodeEncodeError:
        return False
    if _ascii_case_equal(p, h):
        return True
    if len(p) < 3 or p[:2] != b"*.":
        return False
    dot = h.find(b".")
    return dot > 0 and _ascii_case_equal(p[1:], h[dot:])
