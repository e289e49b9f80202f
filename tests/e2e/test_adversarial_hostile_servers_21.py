"""Hostile servers, twenty-first round: the server's key exchange, which rounds 1-20
(test_adversarial_hostile_servers*.py) only ever flipped a byte of (round 3) or filled with
garbage (test_review_held_verdict_2/_3): every earlier hand-made server used RSA key exchange.

Peer: test_adversarial_hostile_servers_6's hand-made TLS 1.2 server turned into an
ECDHE_RSA / DHE_RSA server (TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 0xC02F,
TLS_DHE_RSA_WITH_AES_128_GCM_SHA256 0x009E; the shared PKI's RSA leaf signs the parameters),
its ServerKeyExchange made to the byte by the test, also inside a renegotiation (sealed under
the session's keys); test_adversarial_hostile_servers_7's seclevel 0 / seclevel 1 comparison
(the sniffer read late / at once: the same answer, AT+QIGETERROR line and reason);
test_review_held_verdict_2's engine-vs-python-mbedtls oracle.  Covered (EC2x; the ML302's six
suites are all RSA key exchange, it never reads a ServerKeyExchange):

* a full ECDHE handshake on each of several groups the modem offers (secp256r1, secp384r1,
  secp521r1, x25519, secp256k1, brainpoolP256r1) and a DHE one on ffdhe2048: opens at
  seclevel 1, data both ways;
* ServerKeyExchanges Mbed TLS 2.28 refuses while parsing: a group never offered (sect571r1),
  an explicit_prime curve, a compressed point, a point length past the message, bytes behind
  the signature, md5/rsa and ecdsa signature algorithms with an RSA leaf, a signature by
  another key, one replayed from another handshake (other randoms), a 512-bit DHE prime,
  Ys = 1 / p-1; misplaced: twice, before the Certificate, after the ServerHelloDone, missing,
  sent with an RSA key exchange suite: 566 once, the modem's one fatal alert in clear (the
  exact description), no ClientKeyExchange, Mbed TLS's reason alike at seclevel 0 and 1;
* values Mbed TLS takes unchecked and then cannot use (a point off the curve, the point at
  infinity, a DHE generator 1, an even modulus, a prime over 8192 bits): the failure comes
  while the modem makes its ClientKeyExchange, with NO alert at all: still one 566, nothing
  on the wire, the connection released; in transparent mode ERROR then QIGETERROR 566;
* the same inside a renegotiation (renegotiation 1) behind a line of data, buffer / direct push
  / transparent: the line once, one "closed" (NO CARRIER), state 4, never the record behind the
  bad flight, the alert under the old keys (or none), no ClientKeyExchange;
* a message out of place in front of a Certificate the check refuses (seclevel 1): the engine
  fails as Mbed TLS with VERIFY_REQUIRED does -- its alert, never the certificate's verdict;
* a 512-bit RSA leaf at seclevel 0 (ECDHE signature / RSA premaster): opens.

No bug found.  Checked each time: exact answers on the pty, one +QSSLOPEN per open, no ERROR
log record or traceback (ec2x_strict), AT answering and the id opening again afterwards.
Nothing waits on the modem clock (a hang fails at open_answer's timeout)."""
from __future__ import annotations

import os
import re
import struct
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519
from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding

from emulator.testing.peers import default_pki
from tests.e2e.hostile_support import open_answer, recv
from tests.e2e.test_adversarial_hostile_servers_6 import (CT_ALERT, CT_CCS, CT_HANDSHAKE, EXT_RENEG, RSA_GCM,
                                                          ClientHello, Conn, ext, hs, identity, prf, read_all,
                                                          record)
from tests.e2e.test_adversarial_hostile_servers_7 import (NAME, Server, certificate_body, failed_open, hold,
                                                          ssl_open, usable)
from tests.e2e.socket_support import escape, tcp_fds_to, wait_for
from tests.e2e.test_adversarial_hostile_servers_4 import forget_answers
from tests.e2e.test_review_changes_1205_c import DONE as RH_DONE
from tests.e2e.test_review_changes_1205_c import certificate as rh_certificate
from tests.e2e.test_review_changes_1205_c import rec as rh_rec
from tests.e2e.test_review_changes_1205_c import server_hello as rh_server_hello
from tests.e2e.test_review_held_verdict_2 import CERT_REQ, GARBAGE_SKE, alert_records
from tests.e2e.test_review_held_verdict_2 import other_name  # noqa: F401 (a fixture)
from tests.e2e.test_review_held_verdict_2 import ECDHE_RSA_GCM as RH_ECDHE
from tests.e2e.test_review_held_verdict_2 import engine as rh_engine
from tests.e2e.test_review_held_verdict_2 import mbedtls as rh_mbedtls

pytestmark = pytest.mark.filterwarnings("ignore:Diffie-Hellman over finite fields")

CA_FILE = "UFS:hostile21ca.pem"
ECDHE_RSA_GCM, DHE_RSA_GCM = 0xC02F, 0x009E
SHA256_RSA = b"\x04\x01"
EXT_GROUPS, EXT_POINT_FORMATS, EXT_SIG_ALGS = 10, 11, 13

CURVES = {23: ec.SECP256R1(), 24: ec.SECP384R1(), 25: ec.SECP521R1(), 22: ec.SECP256K1(),
          26: ec.BrainpoolP256R1()}
X25519 = 29

FFDHE2048 = b"""-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""
DH512 = b"""-----BEGIN DH PARAMETERS-----
MEYCQQDcOkR0FD5nIbWWs5AOrQBRao2yXXyAKjyVc51m1ApsjF3mgMxcv6/Zi35U
4g4U5o4RXTY0bOKvDXGPWXUODDZvAgEC
-----END DH PARAMETERS-----
"""


def dh_prime(pem: bytes) -> int:
    return serialization.load_pem_parameters(pem).parameter_numbers().p


def v8(b: bytes) -> bytes:
    return bytes([len(b)]) + b


def v16(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def int_bytes(n: int) -> bytes:
    return n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")


# == the server's key exchange ========================================================================
class Kx:
    """One ServerKeyExchange's parameters and how to get the premaster from the modem's
    ClientKeyExchange body (None: the modem must never send one)."""

    def __init__(self, params: bytes, secret=None) -> None:
        self.params, self.secret = params, secret


def ecdhe(curve_id: int) -> Kx:
    if curve_id == X25519:
        priv = x25519.X25519PrivateKey.generate()
        point = priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return Kx(b"\x03" + struct.pack(">H", curve_id) + v8(point),
                  lambda body: priv.exchange(x25519.X25519PublicKey.from_public_bytes(body[1:1 + body[0]])))
    curve = CURVES[curve_id]
    priv = ec.generate_private_key(curve)
    point = priv.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)

    def secret(body: bytes) -> bytes:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(curve, body[1:1 + body[0]])
        return priv.exchange(ec.ECDH(), peer)
    return Kx(b"\x03" + struct.pack(">H", curve_id) + v8(point), secret)


def dhe(p: int, g: int = 2, ys: int | None = None) -> Kx:
    x = int.from_bytes(os.urandom(32), "big") | 1
    if ys is None:
        ys = pow(g, x, p)

    def secret(body: bytes) -> bytes:
        yc = int.from_bytes(body[2:2 + struct.unpack(">H", body[:2])[0]], "big")
        return int_bytes(pow(yc, x, p))          # leading zeros stripped (RFC 5246 8.1.2)
    return Kx(v16(int_bytes(p)) + v16(int_bytes(g)) + v16(int_bytes(ys)), secret)


def rsa_sign(data: bytes, key=None, alg: bytes = SHA256_RSA) -> bytes:
    key = key or identity()[1]
    sig = key.sign(data, rsa_padding.PKCS1v15(), hashes.SHA256())
    return alg + v16(sig)


def server_flight(hello: ClientHello, sr: bytes, suite: int, kx: Kx, sign=None, tail: bytes = b"",
                  signed_randoms: bytes | None = None, reneg: bytes = b"", ident=None) -> list[bytes]:
    """ServerHello (no session id, renegotiation_info carrying reneg), Certificate (the shared
    PKI's RSA leaf, or ident's (DER, key)), ServerKeyExchange (kx's parameters, signed),
    ServerHelloDone."""
    exts = ext(EXT_RENEG, v8(reneg)) + ext(EXT_POINT_FORMATS, b"\x01\x00")
    sh = hs(2, b"\x03\x03" + sr + b"\x00" + struct.pack(">H", suite) + b"\x00" + v16(exts))
    der, key = ident or identity()
    if sign is None:
        sign = lambda data: rsa_sign(data, key)              # noqa: E731
    randoms = signed_randoms if signed_randoms is not None else hello.random + sr
    ske = hs(12, kx.params + sign(randoms + kx.params) + tail)
    return [sh, hs(11, certificate_body([der])), ske, hs(14, b"")]


class KxFlight:
    """The ECDHE / DHE server's full handshake: its making reads the ClientHello and makes
    ServerHello / Certificate / ServerKeyExchange / ServerHelloDone (not sent); finish() reads
    the modem's flight and returns CCS + Finished."""

    def __init__(self, c: Conn, suite: int, kx: Kx, **flight) -> None:
        self.c, self.kx = c, kx
        body = c.read_handshake()
        assert body[0] == 1, body[:4].hex()
        c.transcript.append(body)
        c.hello = ClientHello(body[4:])
        self.sr = os.urandom(32)
        self.sh, self.cert, self.ske, self.done = server_flight(c.hello, self.sr, suite, kx, **flight)
        c.transcript += [self.sh, self.cert, self.ske, self.done]

    def records(self) -> bytes:
        return b"".join(record(CT_HANDSHAKE, m) for m in (self.sh, self.cert, self.ske, self.done))

    def finish(self) -> bytes:
        c = self.c
        cke = c.read_handshake()
        assert cke[0] == 16, cke[:4].hex()
        c.transcript.append(cke)
        pre = self.kx.secret(cke[4:])
        master = prf(pre, b"master secret", c.hello.random + self.sr, 48)
        c._keys(master, c.hello.random, self.sr, RSA_GCM)      # (0xC02F / 0x009E: AES-128-GCM keys alike)
        c._client_finished(master)
        return record(CT_CCS, b"\x01") + c._finished(master, b"server finished")


def working(suite: int, make_kx):
    def script(c: Conn) -> None:
        f = KxFlight(c, suite, make_kx())
        c.sock.sendall(f.records())
        c.sock.sendall(f.finish())
        c.echo()
    return script


def refused(suite: int, make_kx, order=(0, 1, 2, 3), **flight):
    """order: the flight's messages (0 ServerHello, 1 Certificate, 2 ServerKeyExchange,
    3 ServerHelloDone) as sent, each in a record of its own, in one TCP write."""
    def script(c: Conn) -> None:
        f = KxFlight(c, suite, make_kx(), **flight)
        msgs = (f.sh, f.cert, f.ske, f.done)
        c.sock.sendall(b"".join(record(CT_HANDSHAKE, msgs[i]) for i in order))
        hold(c)                                         # (c.after: what the modem sent then)
    return script


# == the host ======================================================================================
@pytest.fixture
def modem(ec2x_strict):
    host, advance, port = ec2x_strict
    if CA_FILE.encode() not in host.at('AT+QFLST="*"'):
        assert host.upload(CA_FILE, default_pki().ca.cert_pem).endswith(b"OK\r\n")
    for line in ('"ciphersuite",1,"0XC02F:0X009E:0X009C"', f'"cacert",1,"{CA_FILE}"', '"negotiatetime",1,10'):
        assert host.at(f"AT+QSSLCFG={line}") == b"\r\nOK\r\n"
    return ec2x_strict


def both_levels_fail_alike(host, caplog, emulator, script, cid: int):
    """The script at seclevel 0, then at seclevel 1: the same 566, QIGETERROR line and reason;
    the id opens again (seclevel 1, a good RSA server).  Returns (reason, the two connections)."""
    with Server(emulator, script, script) as server:
        lazy = failed_open(host, caplog, server, cid, 0)
        eager = failed_open(host, caplog, server, cid, 1)
        assert lazy == eager, (lazy, eager)
        assert lazy[:2] == (566, b"+QIGETERROR: 566,socket connection failed")
        usable(host, cid)
        return lazy[2], server.conns[:2]


def after_flight(conn: Conn) -> list[tuple[int, bytes]]:
    return list(getattr(conn, "after", []))


# == ECDHE / DHE that work ===========================================================================
@pytest.mark.parametrize("group", [23, 24, 25, X25519, 22, 26],
                         ids=["secp256r1", "secp384r1", "secp521r1", "x25519", "secp256k1", "brainpoolP256r1"])
def test_ecdhe_on_each_offered_group_opens_at_seclevel_1(modem, emulator, group):
    """The server picks a group the ClientHello offered: the modem's ClientKeyExchange carries
    its point on that group, the premaster agrees (the Finished checks out), data both ways."""
    host, advance, port = modem
    assert host.at('AT+QSSLCFG="seclevel",1,1') == b"\r\nOK\r\n"
    with Server(emulator, working(ECDHE_RSA_GCM, lambda: ecdhe(group))) as server:
        ssl_open(host, 2)
        assert open_answer(host, 2) == 0
        hello = server.conns[0].hello
        groups = hello.extensions[EXT_GROUPS]
        assert struct.pack(">H", group) in [groups[i:i + 2] for i in range(2, len(groups), 2)]
        assert host.send_data(2, b"kx-ok") == b"\r\nSEND OK\r\n"
        assert read_all(host, 2, 5) == b"kx-ok"
        assert host.at("AT+QSSLCLOSE=2,0") == b"\r\nOK\r\n"


def test_dhe_on_ffdhe2048_opens_at_seclevel_1(modem, emulator):
    """DHE_RSA on ffdhe2048's prime: the modem's ClientKeyExchange carries a 2048-bit Yc, the
    premaster agrees, data both ways."""
    host, advance, port = modem
    assert host.at('AT+QSSLCFG="seclevel",1,1') == b"\r\nOK\r\n"
    p = dh_prime(FFDHE2048)
    with Server(emulator, working(DHE_RSA_GCM, lambda: dhe(p))) as server:
        ssl_open(host, 3)
        assert open_answer(host, 3) == 0
        cke = [m for m in server.conns[0].transcript if m[0] == 16]
        assert len(cke) == 1 and struct.unpack(">H", cke[0][4:6])[0] == 256, cke
        assert host.send_data(3, b"dhe-ok") == b"\r\nSEND OK\r\n"
        assert read_all(host, 3, 6) == b"dhe-ok"
        assert host.at("AT+QSSLCLOSE=3,0") == b"\r\nOK\r\n"


# == ServerKeyExchanges Mbed TLS refuses (with its alert) =========================================
def _p256_point() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def _compressed() -> Kx:
    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    return Kx(b"\x03\x00\x17" + v8(point))


_OTHER_KEY = []


def _other_key_sign(data: bytes) -> bytes:
    """Signed by another 2048-bit key whose modulus is below the leaf's: the signature is then
    always a number Mbed TLS's RSA public operation takes, and fails as a signature (-0x4380);
    one at or above the leaf's modulus fails earlier, as bad input (-0x4284), by chance."""
    if not _OTHER_KEY:
        leaf_n = identity()[1].public_key().public_numbers().n
        while True:
            key = rsa.generate_private_key(65537, 2048)
            if key.public_key().public_numbers().n < leaf_n:
                break
        _OTHER_KEY.append(key)
    return rsa_sign(data, _OTHER_KEY[0])


def _p() -> int:
    return dh_prime(FFDHE2048)


UNEXPECTED_MESSAGE, ILLEGAL_PARAMETER, DECODE_ERROR, DECRYPT_ERROR = 10, 47, 50, 51
DONE_FAILED = "SSL - Processing of the ServerHelloDone handshake message failed (mbedtls -0x7B80)"
UNEXPECTED = "SSL - An unexpected message was received from our peer (mbedtls -0x7700)"
SKE_FAILED = "SSL - Processing of the ServerKeyExchange handshake message failed (mbedtls -0x7B00)"
SIGNATURE = "RSA - The PKCS#1 verification failed (mbedtls -0x4380)"

HOSTILE_SKE = {
    # kind: (script kwargs, the modem's alert description, the reason in the log)
    "group_not_offered": (dict(make_kx=lambda: Kx(b"\x03\x00\x0e" + v8(_p256_point()))),   # sect571r1
                          ILLEGAL_PARAMETER, SKE_FAILED),
    "explicit_prime_curve": (dict(make_kx=lambda: Kx(b"\x01" + v8(os.urandom(32)) + v8(b"\x01") + v8(b"\x02"))),
                             ILLEGAL_PARAMETER, SKE_FAILED),
    "compressed_point": (dict(make_kx=_compressed), ILLEGAL_PARAMETER, SKE_FAILED),
    "point_length_past_the_message": (dict(make_kx=lambda: Kx(b"\x03\x00\x17\xff" + _p256_point())),
                                      ILLEGAL_PARAMETER, SKE_FAILED),
    "bytes_behind_the_signature": (dict(make_kx=lambda: ecdhe(23), tail=b"\x00\x00"), DECODE_ERROR, SKE_FAILED),
    "md5_rsa_signature_algorithm": (dict(make_kx=lambda: ecdhe(23), sign=lambda d: rsa_sign(d, alg=b"\x01\x01")),
                                    ILLEGAL_PARAMETER, SKE_FAILED),
    "ecdsa_signature_algorithm_rsa_leaf": (dict(make_kx=lambda: ecdhe(23),
                                                sign=lambda d: rsa_sign(d, alg=b"\x04\x03")),
                                           ILLEGAL_PARAMETER, SKE_FAILED),
    "signed_by_another_key": (dict(make_kx=lambda: ecdhe(23), sign=_other_key_sign), DECRYPT_ERROR, SIGNATURE),
    "replayed_from_another_handshake": (dict(make_kx=lambda: ecdhe(23), signed_randoms=os.urandom(64)),
                                        DECRYPT_ERROR, SIGNATURE),
    "dhe_prime_of_512_bits": (dict(suite=DHE_RSA_GCM, make_kx=lambda: dhe(dh_prime(DH512))),
                              ILLEGAL_PARAMETER, SKE_FAILED),
    "dhe_ys_1": (dict(suite=DHE_RSA_GCM, make_kx=lambda: dhe(_p(), ys=1)), ILLEGAL_PARAMETER, SKE_FAILED),
    "dhe_ys_p_minus_1": (dict(suite=DHE_RSA_GCM, make_kx=lambda: dhe(_p(), ys=_p() - 1)),
                         ILLEGAL_PARAMETER, SKE_FAILED),
    # (RSA key exchange: Mbed TLS reads no ServerKeyExchange, takes it for "not a CertificateRequest"
    # and fails it where the ServerHelloDone is due -- its own words name that message)
    # the flight's order (Mbed TLS's words name the message whose slot failed)
    "ske_twice": (dict(make_kx=lambda: ecdhe(23), order=(0, 1, 2, 2, 3)), DECODE_ERROR, DONE_FAILED),
    "ske_before_the_certificate": (dict(make_kx=lambda: ecdhe(23), order=(0, 2, 1, 3)), DECODE_ERROR,
                                   "SSL - Processing of the Certificate handshake message failed (mbedtls -0x7A00)"),
    "no_ske": (dict(make_kx=lambda: ecdhe(23), order=(0, 1, 3)), UNEXPECTED_MESSAGE, UNEXPECTED),
    "ske_after_the_done": (dict(make_kx=lambda: ecdhe(23), order=(0, 1, 3, 2)), UNEXPECTED_MESSAGE, UNEXPECTED),
    "ske_with_rsa_key_exchange": (dict(suite=RSA_GCM, make_kx=lambda: ecdhe(23)), DECODE_ERROR, DONE_FAILED),
}


@pytest.mark.parametrize("kind", list(HOSTILE_SKE))
def test_server_key_exchange_mbedtls_refuses(modem, emulator, caplog, kind):
    """A ServerKeyExchange Mbed TLS 2.28 refuses: the modem answers the server's first flight
    with one fatal alert in clear instead of a ClientKeyExchange; the host gets one 566 at
    seclevel 0 and 1 alike, with the same reason; the id opens again."""
    host, advance, port = modem
    spec, alert, want = HOSTILE_SKE[kind]
    kw = dict(spec)
    make_kx, suite = kw.pop("make_kx"), kw.pop("suite", ECDHE_RSA_GCM)
    reason, conns = both_levels_fail_alike(host, caplog, emulator, refused(suite, make_kx, **kw), 4)
    assert reason == want, (kind, reason)
    for conn in conns:
        # one fatal alert in clear, nothing else: no ClientKeyExchange, no CCS
        assert after_flight(conn) == [(CT_ALERT, bytes([2, alert]))], (kind, after_flight(conn))


def test_offered_signature_algorithms_premise(modem, emulator):
    """(What the refused signature algorithms above rely on: the modem offers neither md5/rsa
    nor any algorithm outside TLS 1.2's (hash, signature) pairs, and only uncompressed
    points.)"""
    host, advance, port = modem
    with Server(emulator, working(ECDHE_RSA_GCM, lambda: ecdhe(23))) as server:
        ssl_open(host, 5)
        assert open_answer(host, 5) == 0
        hello = server.conns[0].hello
        algs = hello.extensions[EXT_SIG_ALGS]
        pairs = [algs[i:i + 2] for i in range(2, len(algs), 2)]
        assert b"\x01\x01" not in pairs and SHA256_RSA in pairs, [p.hex() for p in pairs]
        assert hello.extensions[EXT_POINT_FORMATS] == b"\x01\x00"
        groups = hello.extensions[EXT_GROUPS]
        assert b"\x00\x0e" not in [groups[i:i + 2] for i in range(2, len(groups), 2)]
        assert host.at("AT+QSSLCLOSE=5,0") == b"\r\nOK\r\n"


# == points / parameters Mbed TLS takes, then cannot use =================================================
def _off_curve() -> Kx:
    return Kx(b"\x03\x00\x17" + v8(b"\x04" + os.urandom(64)))


UNUSABLE = {
    # kind: (suite, parameters, the reason in the log: Mbed TLS's own error)
    "ecdhe_point_off_the_curve": (ECDHE_RSA_GCM, _off_curve, "ECP - Invalid private or public key (mbedtls -0x4C80)"),
    "ecdhe_point_at_infinity": (ECDHE_RSA_GCM, lambda: Kx(b"\x03\x00\x17" + v8(b"\x00")),
                                "ECP - Invalid private or public key (mbedtls -0x4C80)"),
    "dhe_generator_1": (DHE_RSA_GCM, lambda: dhe(_p(), g=1, ys=2), "DHM - Bad input parameters (mbedtls -0x3080)"),
    # (Mbed TLS draws a secret exponent as long as the prime: past 1024 bytes its CTR_DRBG refuses)
    "dhe_prime_over_8192_bits": (DHE_RSA_GCM, lambda: dhe((1 << 8200) - 1, ys=5),
                                 "DHM - Making of the public value failed : CTR_DRBG - The requested random buffer "
                                 "length is too big (mbedtls -0x32B6)"),
    "dhe_even_modulus": (DHE_RSA_GCM, lambda: dhe(_p() - 1, ys=5),
                         "DHM - Making of the public value failed : BIGNUM - Bad input parameters to function "
                         "(mbedtls -0x3284)"),
}


@pytest.mark.parametrize("kind", list(UNUSABLE))
def test_key_exchange_values_the_modem_cannot_use(modem, emulator, caplog, kind):
    """Parameters whose use fails in Mbed TLS -- in the parse (a too short prime, Ys out of
    range) or only while the modem makes its ClientKeyExchange (a point it never checked, its own
    public value 1): one 566, QIGETERROR 566, no ClientKeyExchange ever on the wire, the same
    reason at seclevel 0 and 1, the id reusable."""
    host, advance, port = modem
    suite, make_kx, want = UNUSABLE[kind]
    reason, conns = both_levels_fail_alike(host, caplog, emulator, refused(suite, make_kx), 6)
    assert reason == want, (kind, reason)
    for conn in conns:
        assert after_flight(conn) == [], (kind, after_flight(conn))     # Mbed TLS sends no alert here



# == the same met by the other access modes ======================================================
def test_transparent_open_meeting_an_unusable_point_is_error_then_566(modem, emulator):
    """AT+QSSLOPEN=...,2 against a ServerKeyExchange whose point is off the curve (the failure
    without any alert of Mbed TLS): no CONNECT, exactly "ERROR", QIGETERROR 566, command mode,
    no URC; the id then opens transparently over x25519 and carries data both ways."""
    host, advance, port = modem
    with Server(emulator, refused(ECDHE_RSA_GCM, _off_curve), working(ECDHE_RSA_GCM, lambda: ecdhe(X25519))) as server:
        mark = len(host.transcript)
        host.write(f'AT+QSSLOPEN=1,1,7,"{NAME}",443,2\r'.encode())
        assert host.read_until(re.compile(rb"CONNECT\r\n|ERROR\r\n")) == b"\r\nERROR\r\n"
        assert host.quiet_for(0.1) == b""
        assert b"+QIGETERROR: 566," in host.at("AT+QIGETERROR")
        assert b"+QSSL" not in bytes(host.transcript[mark:])
        assert host.at("AT") == b"\r\nOK\r\n"
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
        assert after_flight(server.conns[0]) == []
        host.write(f'AT+QSSLOPEN=1,1,7,"{NAME}",443,2\r'.encode())
        assert host.read_until(re.compile(rb"CONNECT\r\n|ERROR\r\n")) == b"\r\nCONNECT\r\n"
        host.write(b"x25519 online")
        assert host.read_until(b"x25519 online", 5).endswith(b"x25519 online")
        assert escape(host, advance).endswith(b"\r\nOK\r\n")
        assert host.at("AT+QSSLCLOSE=7,0") == b"\r\nOK\r\n"


# == the same inside a renegotiation (renegotiation 1) ==============================================
RENEG_SKE = {
    # kind: (parameters / signing of the renegotiation's ServerKeyExchange, the modem's records then)
    "signed_by_another_key": (dict(make_kx=lambda: ecdhe(23), sign=_other_key_sign), [(CT_ALERT, b"\x02\x33")]),
    "group_not_offered": (dict(make_kx=lambda: Kx(b"\x03\x00\x0e" + v8(_p256_point()))), [(CT_ALERT, b"\x02\x2f")]),
    "point_off_the_curve": (dict(make_kx=_off_curve), []),
}


LINE = b"before the renegotiation\r\n"


def reneg_script(spec: dict, seen: dict):
    """A full ECDHE handshake; then LINE and a HelloRequest; the modem's renegotiating
    ClientHello answered with a proper ServerHello (renegotiation_info of both verify_data),
    the Certificate, the ServerKeyExchange spec makes, ServerHelloDone and a record of
    application data behind them, all in one segment; then every record the modem sends,
    decrypted under the old keys, into seen["after"]."""
    spec = dict(spec)
    make_kx = spec.pop("make_kx")

    def script(c: Conn) -> None:
        f = KxFlight(c, ECDHE_RSA_GCM, ecdhe(23))
        c.sock.sendall(f.records())
        c.sock.sendall(f.finish())
        client_vd, server_vd = c.transcript[-2][4:], c.transcript[-1][4:]
        c.sock.sendall(c.app(LINE) + c.tx.seal(CT_HANDSHAKE, hs(0, b"")))
        ct, payload = c.read_record()
        body = c.rx.open(ct, payload)
        assert (ct, body[:1]) == (CT_HANDSHAKE, b"\x01"), (ct, body[:8].hex())
        hello = ClientHello(body[4:])
        seen["reneg_info"] = hello.extensions.get(EXT_RENEG) == v8(client_vd)
        msgs = server_flight(hello, os.urandom(32), ECDHE_RSA_GCM, make_kx(), reneg=client_vd + server_vd, **spec)
        c.sock.sendall(b"".join(c.tx.seal(CT_HANDSHAKE, m) for m in msgs) + c.app(b"never shown\r\n"))
        after = []
        try:
            while True:
                ct, payload = c.read_record()
                after.append((ct, c.rx.open(ct, payload)))
        except (OSError, EOFError):
            pass
        seen["after"] = after
    return script


def _reopen(host, emulator, cid: int) -> None:
    with Server(emulator):
        forget_answers(host, cid)
        ssl_open(host, cid)
        assert open_answer(host, cid) == 0
        assert host.at(f"AT+QSSLCLOSE={cid},0") == b"\r\nOK\r\n"


@pytest.mark.parametrize("kind", list(RENEG_SKE))
def test_hostile_key_exchange_in_a_renegotiation_ends_the_session_once(modem, emulator, caplog, kind):
    """An established ECDHE session (renegotiation 1): the server sends a line, a HelloRequest,
    then answers the modem's renegotiating ClientHello (encrypted) with a proper ServerHello
    (renegotiation_info of both verify_data) and a ServerKeyExchange Mbed TLS refuses or cannot
    use, a line behind it.  The host: the first line readable, one "closed", state 4, no other
    URC, never the second line; the server gets under the old keys the modem's one fatal alert
    (or, where Mbed TLS sends none, nothing) and never a ClientKeyExchange; the id opens again."""
    host, advance, port = modem
    spec, want_after = RENEG_SKE[kind]
    assert host.at('AT+QSSLCFG="renegotiation",1,1') == b"\r\nOK\r\n"
    seen: dict = {}
    with Server(emulator, reneg_script(spec, seen)) as server:
        mark = len(host.transcript)
        ssl_open(host, 8)
        assert open_answer(host, 8) == 0
        host.seen(b'+QSSLURC: "closed",8\r\n', 10)
        assert read_all(host, 8, len(LINE)) == LINE
        assert recv(host, 8) == b""
        assert host.quiet_for(0.1) == b""
        urcs = re.findall(rb'\+QSSL(?:URC|OPEN): [^\r]*', bytes(host.transcript[mark:]))
        assert urcs == [b"+QSSLOPEN: 8,0", b'+QSSLURC: "recv",8', b'+QSSLURC: "closed",8'], urcs
        assert re.search(rb'\+QSSLSTATE: 8,"SSLClient","[^"]*",\d+,\d+,4,', host.at("AT+QSSLSTATE=8"))
        wait_for(lambda: "after" in seen, 5, "the server saw the end")
        assert seen["reneg_info"], "the renegotiating ClientHello carries the client verify_data"
        assert seen["after"] == want_after, (kind, seen["after"])
        assert host.at("AT+QSSLCLOSE=8,0") == b"\r\nOK\r\n"
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
    _reopen(host, emulator, 8)


@pytest.mark.parametrize("kind", ["signed_by_another_key", "point_off_the_curve"])
@pytest.mark.parametrize("mode", [1, 2], ids=["push", "transparent"])
def test_hostile_key_exchange_in_a_renegotiation_push_and_transparent(modem, emulator, mode, kind):
    """The same in direct push mode (the line pushed, framed, then "closed") and transparent
    mode (CONNECT, the line, NO CARRIER, no URC, command mode)."""
    host, advance, port = modem
    spec, want_after = RENEG_SKE[kind]
    assert host.at('AT+QSSLCFG="renegotiation",1,1') == b"\r\nOK\r\n"
    seen: dict = {}
    with Server(emulator, reneg_script(spec, seen)) as server:
        mark = len(host.transcript)
        host.write(f'AT+QSSLOPEN=1,1,9,"{NAME}",443,{mode}\r'.encode())
        if mode == 2:
            want = b"\r\nCONNECT\r\n" + LINE + b"\r\nNO CARRIER\r\n"
            assert host.read_until(b"\r\nNO CARRIER\r\n", 10) == want
        else:
            want = (b"\r\nOK\r\n\r\n+QSSLOPEN: 9,0\r\n" + b'\r\n+QSSLURC: "recv",9,%d\r\n' % len(LINE) + LINE
                    + b'\r\n\r\n+QSSLURC: "closed",9\r\n')
            assert host.read_until(b'+QSSLURC: "closed",9\r\n', 10) == want
        assert host.quiet_for(0.1) == b""
        assert host.at("AT") == b"\r\nOK\r\n"
        assert bytes(host.transcript[mark:]).count(b"never shown") == 0
        wait_for(lambda: "after" in seen, 5, "the server saw the end")
        assert seen["after"] == want_after, (kind, seen["after"])
        assert host.at("AT+QSSLCLOSE=9,0") == b"\r\nOK\r\n"
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
    _reopen(host, emulator, 9)


# == a misplaced key exchange in front of a chain the check refuses (engine vs Mbed TLS) ===========
# Mbed TLS with VERIFY_REQUIRED (a module) fails at the first message out of place; a Certificate
# that comes later in the flight is never parsed, so never judged.  The engine (seclevel 1: Mbed
# TLS at VERIFY_OPTIONAL, its own check held until Mbed TLS took the Certificate) must fail alike:
# the same alert, a handshake failure -- not a certificate verdict.
def _misplaced(layout: str, ders: list[bytes]):
    sh, cert = rh_server_hello(suite=RH_ECDHE), rh_certificate(ders)
    return {
        "ske_before_the_certificate": lambda ch: rh_rec(22, sh) + rh_rec(22, GARBAGE_SKE) + rh_rec(22, cert)
        + rh_rec(22, RH_DONE),
        "ske_before_the_certificate_one_record": lambda ch: rh_rec(22, sh + GARBAGE_SKE + cert + RH_DONE),
        "done_before_the_certificate": lambda ch: rh_rec(22, sh + RH_DONE + cert + GARBAGE_SKE),
        "certificate_request_first": lambda ch: rh_rec(22, sh + CERT_REQ + cert + GARBAGE_SKE + RH_DONE),
    }[layout]


@pytest.mark.needs_native
@pytest.mark.parametrize("layout", ["ske_before_the_certificate", "ske_before_the_certificate_one_record",
                                    "done_before_the_certificate", "certificate_request_first"])
def test_misplaced_message_in_front_of_a_refused_chain_fails_as_mbedtls(pki, other_name, layout):
    flight = _misplaced(layout, other_name)
    err, mbed_out = rh_mbedtls(pki, flight, RH_ECDHE)
    assert err is not None and err != 0x2700, hex(err or 0)          # (never the verify verdict)
    state, ends, sent = rh_engine(pki, flight, RH_ECDHE)
    assert state == "failed" and len(ends) == 1, ends
    assert ends[0].kind == "handshake_failed", ends
    assert alert_records(sent) == alert_records(mbed_out), (sent.hex(), mbed_out.hex())
    assert f"mbedtls -0x{err:04X}" in ends[0].reason, (ends[0].reason, hex(err))


# == a weak server key at seclevel 0 ===================================================================
_WEAK: dict = {}


def weak_identity(tmp_path_factory) -> tuple[bytes, object]:
    """A self-signed leaf for NAME with a 512-bit RSA key (`openssl req`; `cryptography` makes no
    key that small)."""
    if "ident" not in _WEAK:
        d = tmp_path_factory.mktemp("weak21")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:512", "-nodes", "-keyout", str(d / "k.pem"),
                        "-out", str(d / "c.pem"), "-days", "3650", "-subj", f"/CN={NAME}"],
                       check=True, capture_output=True)
        cert = x509.load_pem_x509_certificate((d / "c.pem").read_bytes())
        key = serialization.load_pem_private_key((d / "k.pem").read_bytes(), None)
        _WEAK["ident"] = (cert.public_bytes(serialization.Encoding.DER), key)
    return _WEAK["ident"]


@pytest.mark.parametrize("kx", ["ecdhe_rsa", "rsa"])
def test_512_bit_server_key_at_seclevel_0_opens(modem, emulator, tmp_path_factory, kx):
    """seclevel 0 takes any server certificate (Mbed TLS's VERIFY_NONE checks no key size): a
    512-bit RSA leaf signing the ECDHE parameters, or encrypting the premaster (RSA key
    exchange, PKCS#1 v1.5 fits 48 bytes in 64): opens, data both ways.  (seclevel 1 refuses
    such keys: test_adversarial_hostile_servers_2.)"""
    host, advance, port = modem
    ident = weak_identity(tmp_path_factory)

    def script(c: Conn) -> None:
        if kx == "ecdhe_rsa":
            f = KxFlight(c, ECDHE_RSA_GCM, ecdhe(23), ident=ident)
            c.sock.sendall(f.records())
        else:
            f = KxFlight(c, RSA_GCM, Kx(b"", lambda body: ident[1].decrypt(body[2:], rsa_padding.PKCS1v15())),
                         ident=ident)
            c.transcript.remove(f.ske)
            c.sock.sendall(b"".join(record(CT_HANDSHAKE, m) for m in (f.sh, f.cert, f.done)))
        c.sock.sendall(f.finish())
        c.echo()

    with Server(emulator, script):
        ssl_open(host, 2)
        assert open_answer(host, 2) == 0
        assert host.send_data(2, b"weak key") == b"\r\nSEND OK\r\n"
        assert read_all(host, 2, 8) == b"weak key"
        assert host.at("AT+QSSLCLOSE=2,0") == b"\r\nOK\r\n"
