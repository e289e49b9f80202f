"""EC2x SSL sockets in buffer access mode, over the pty, against OpenSSL servers
(Python ssl, emulator.testing.peers.TlsServer) on loopback: the note's §3 examples verbatim, verification levels,
many sockets, binary bulk data, peer close and every failure's QIGETERROR."""
from __future__ import annotations

import hashlib
import os
import re
import socket

import pytest

from emulator.testing.peers import TlsServer, reply_after

MANUAL_HOST = "220.180.239.212"      # one of the shared PKI's server names (RSA keys: the
                                     # note's table is mostly RSA key-exchange suites)


@pytest.fixture
def net(emulator, ec2x):
    """ec2x with PDP context 1 active, and a helper to route the manual's host to a server."""
    assert ec2x.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"

    def route(server: TlsServer, port: int = 8010, host: str = MANUAL_HOST) -> None:
        emulator.router.add_map(host, port, "127.0.0.1", server.port)
    return route


def opened(host, client_id: int, timeout: float = 10) -> int:
    line = host.seen(re.compile(rb"\r\n\+QSSLOPEN: %d,(-?\d+)\r\n" % client_id), timeout)
    return int(re.search(rb"(-?\d+)\r\n$", line).group(1))


def open_example(host, client_id: int = 0, ctx: int = 0) -> int:
    """AT+QSSLOPEN to the manual's host, port 8010, buffer mode (OK); the <err> of the
    +QSSLOPEN that follows."""
    assert host.at(f'AT+QSSLOPEN=1,{ctx},{client_id},"{MANUAL_HOST}",8010') == b"\r\nOK\r\n"
    return opened(host, client_id)


def test_manual_examples_3_1_to_3_3_verbatim(ec2x, emulator, pki):
    with TlsServer(pki.server, legacy=True, handler=reply_after(36, b"Test data from SSL")) as server:
        emulator.router.add_map(MANUAL_HOST, 8010, "127.0.0.1", server.port)
        # §3.1
        assert ec2x.at('AT+QICSGP=1,1,"UNINET","","",1') == b"\r\nOK\r\n"
        assert ec2x.at("AT+QIACT=1") == b"\r\nOK\r\n"
        assert ec2x.at("AT+QIACT?") == b'\r\n+QIACT: 1,1,1,"10.7.157.1"\r\n\r\nOK\r\n'
        ca = pki.ca.cert_pem
        assert ec2x.upload("RAM:cacert.pem", ca).startswith(b"\r\n+QFUPL: %d," % len(ca))
        # §3.2 (lost in the OCR but for its last comment; see docs/behaviour.md)
        assert ec2x.at('AT+QSSLCFG="sslversion",1,1') == b"\r\nOK\r\n"
        assert ec2x.at('AT+QSSLCFG="ciphersuite",1,0X0035') == b"\r\nOK\r\n"
        assert ec2x.at('AT+QSSLCFG="seclevel",1,1') == b"\r\nOK\r\n"
        assert ec2x.at('AT+QSSLCFG="cacert",1,"RAM:cacert.pem"') == b"\r\nOK\r\n"
        # §3.3.1
        assert ec2x.at('AT+QSSLOPEN=1,1,4,"220.180.239.212",8010,0') == b"\r\nOK\r\n"
        assert ec2x.read_until(b"\r\n+QSSLOPEN: 4,0\r\n") == b"\r\n+QSSLOPEN: 4,0\r\n"
        state = ec2x.at("AT+QSSLSTATE")
        assert re.fullmatch(rb'\r\n\+QSSLSTATE: 4,"SSLClient","220\.180\.239\.212",8010,\d+,2,1,4,0,"usbmodem",1'
                            rb"\r\n\r\nOK\r\n", state), state
        # §3.3.2.1 and §3.3.2.2
        assert ec2x.send_data(4, b"Test data from SSL", fixed=False) == b"\r\nSEND OK\r\n"
        assert ec2x.send_data(4, b"Test data from SSL") == b"\r\nSEND OK\r\n"
        # §3.3.3
        assert ec2x.read_until(b'\r\n+QSSLURC: "recv",4\r\n', 10) == b'\r\n+QSSLURC: "recv",4\r\n'
        assert ec2x.at("AT+QSSLRECV=4,1500") == b"\r\n+QSSLRECV: 18\r\nTest data from SSL\r\n\r\nOK\r\n"
        assert ec2x.at("AT+QSSLRECV=4,1500") == b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n"
        # §3.3.4
        assert ec2x.at("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"
        assert ec2x.at("AT+QSSLSTATE") == b"\r\nOK\r\n"
        server.conn.done.wait(5)
    # What the server saw: the pinned version, the chosen suite, both sends.
    assert server.conn.version == "TLSv1"
    assert server.conn.cipher == "AES256-SHA"
    assert bytes(server.conn.received[:36]) == b"Test data from SSL" * 2


@pytest.mark.parametrize("cipher_id, openssl_name", [("0XC02F", "ECDHE-RSA-AES128-GCM-SHA256"),
                                                     ("0X002F", "AES128-SHA"),
                                                     ("0XC014", "ECDHE-RSA-AES256-SHA")])
def test_chosen_cipher_suite_is_what_the_server_negotiates(ec2x, net, pki, cipher_id, openssl_name):
    with TlsServer(pki.server, legacy=True) as server:
        net(server)
        assert ec2x.at(f'AT+QSSLCFG="ciphersuite",0,{cipher_id}') == b"\r\nOK\r\n"
        assert open_example(ec2x) == 0
        assert ec2x.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"
    assert server.conn.cipher == openssl_name


def test_seclevel_0_needs_nothing(ec2x, net, pki):
    with TlsServer(pki.server, legacy=True) as server:
        net(server)
        assert open_example(ec2x) == 0
        assert ec2x.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"


def test_seclevel_1_right_ca_passes_wrong_ca_fails(ec2x, net, pki):
    ec2x.upload("UFS:ca.pem", pki.ca.cert_pem)
    ec2x.upload("UFS:wrong.pem", pki.wrong_ca.cert_pem)
    with TlsServer(pki.server, legacy=True) as server:
        net(server)
        ec2x.at('AT+QSSLCFG="seclevel",2,1;+QSSLCFG="cacert",2,"UFS:ca.pem"')
        assert open_example(ec2x, 0, ctx=2) == 0
        ec2x.at('AT+QSSLCFG="cacert",2,"ca.pem"')        # bare name = UFS
        assert open_example(ec2x, 1, ctx=2) == 0
        ec2x.at('AT+QSSLCFG="cacert",2,"UFS:wrong.pem"')
        assert open_example(ec2x, 2, ctx=2) == 566
        assert ec2x.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 566,socket connection failed\r\n\r\nOK\r\n"
        assert ec2x.at("AT+QSSLSTATE=2") == b"\r\nOK\r\n"          # a failed open frees the id
        assert ec2x.at("AT+QSSLCLOSE=0;+QSSLCLOSE=1") == b"\r\nOK\r\n"


def test_seclevel_2_mutual_auth(ec2x, net, pki):
    ec2x.upload("UFS:ca.pem", pki.ca.cert_pem)
    ec2x.upload("UFS:client.pem", pki.client.cert_pem)
    ec2x.upload("UFS:client.key", pki.client.key_pem)
    with TlsServer(pki.server, legacy=True, client_ca=pki.ca, require_client_cert=True) as server:
        net(server)
        ec2x.at('AT+QSSLCFG="seclevel",3,2;+QSSLCFG="cacert",3,"ca.pem"')
        ec2x.at('AT+QSSLCFG="clientcert",3,"client.pem";+QSSLCFG="clientkey",3,"client.key"')
        assert open_example(ec2x, 0, ctx=3) == 0
        assert ec2x.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"
        server.conn.done.wait(5)
        assert server.conn.client_cert is not None
        # seclevel 1 presents no certificate: the server refuses the handshake
        ec2x.at('AT+QSSLCFG="seclevel",3,1')
        assert open_example(ec2x, 1, ctx=3) == 566
        # seclevel 2 with a key file that is not there: refused before any handshake
        ec2x.at('AT+QSSLCFG="seclevel",3,2;+QSSLCFG="clientkey",3,"RAM:none.key"')
        assert open_example(ec2x, 2, ctx=3) == 552
        assert ec2x.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"


def test_four_sockets_on_two_contexts(ec2x, net, pki):
    servers = [TlsServer(pki.server, legacy=True) for _ in range(4)]
    for i, server in enumerate(servers):
        net(server, port=9000 + i)
    try:
        for cid in range(4):
            assert ec2x.at(f'AT+QSSLOPEN=1,{cid % 2},{cid},"220.180.239.212",{9000 + cid}').endswith(b"OK\r\n")
        assert [opened(ec2x, cid) for cid in range(4)] == [0, 0, 0, 0]
        for cid in range(4):
            assert ec2x.send_data(cid, b"socket %d" % cid) == b"\r\nSEND OK\r\n"
        for cid in range(4):
            ec2x.seen(b'+QSSLURC: "recv",%d\r\n' % cid, 10)
        for cid in range(4):
            assert ec2x.at(f"AT+QSSLRECV={cid},100") == b"\r\n+QSSLRECV: 8\r\nsocket %d\r\n\r\nOK\r\n" % cid
        lines = ec2x.at("AT+QSSLSTATE").split(b"\r\n")
        assert [ln.split(b",")[-1] for ln in lines if ln.startswith(b"+QSSLSTATE")] == [b"0", b"1", b"0", b"1"]
        for cid in range(4):
            assert ec2x.at(f"AT+QSSLCLOSE={cid}") == b"\r\nOK\r\n"
    finally:
        for server in servers:
            server.close()


def test_one_mib_of_binary_up_and_down(ec2x, net, pki):
    payload = os.urandom(int(os.environ.get("MIB_TEST_BYTES", 1 << 20)))
    assert b"\x1a" in payload and b"\x1b" in payload
    received = bytearray()
    with TlsServer(pki.server, legacy=True) as server:
        net(server)
        assert open_example(ec2x) == 0

        def drain() -> None:
            while True:
                answer = ec2x.at("AT+QSSLRECV=0,1500")      # a "recv" URC may come first
                m = re.search(rb"\+QSSLRECV: (\d+)\r\n", answer)
                n = int(m.group(1))
                if n == 0:
                    return
                data = answer[m.end():m.end() + n]
                assert answer[m.end() + n:] == b"\r\n\r\nOK\r\n"
                received.extend(data)

        sent = 0
        while sent < len(payload):
            chunk = payload[sent:sent + 1460]
            result = ec2x.send_data(0, chunk)
            if result == b"\r\nSEND OK\r\n":
                sent += len(chunk)
            else:
                assert result == b"\r\nSEND FAIL\r\n"
            drain()
        while len(received) < len(payload):
            drain()
        assert ec2x.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"
        server.conn.done.wait(5)
    assert hashlib.sha256(server.conn.received).digest() == hashlib.sha256(payload).digest()
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()


def test_peer_close_reports_closed_and_keeps_data(ec2x, net, pki):
    with TlsServer(pki.server, legacy=True, mode="send_then_close", payload=b"bye") as server:
        net(server)
        assert open_example(ec2x, 5) == 0
        ec2x.seen(b'\r\n+QSSLURC: "closed",5\r\n', 10)
        assert re.search(rb',4,1,5,0,"usbmodem",0\r\n', ec2x.at("AT+QSSLSTATE=5"))
        assert ec2x.at("AT+QSSLRECV=5,1500") == b"\r\n+QSSLRECV: 3\r\nbye\r\n\r\nOK\r\n"
        assert ec2x.send_data(5, b"late") == b"\r\nERROR\r\n"
        assert ec2x.at("AT+QSSLCLOSE=5") == b"\r\nOK\r\n"
        assert ec2x.at("AT+QSSLSTATE") == b"\r\nOK\r\n"


def test_failures_and_qigeterror(ec2x, emulator, pki):
    def err() -> bytes:
        return ec2x.at("AT+QIGETERROR")

    # PDP context not active yet
    assert ec2x.at('AT+QSSLOPEN=1,0,0,"220.180.239.212",8010') == b"\r\nERROR\r\n"
    assert err() == b"\r\n+QIGETERROR: 561,open PDP context failed\r\n\r\nOK\r\n"
    ec2x.at("AT+QIACT=1")
    # bad parameters
    for line in ('AT+QSSLOPEN=1,6,0,"h",1', "AT+QSSLSEND=0,", "AT+QSSLSEND=0,0", "AT+QSSLSEND=0,1461", 'AT+QSSLOPEN=1,0,12,"h",1', 'AT+QSSLOPEN=1,0,0,"h",0',
                 'AT+QSSLCFG="nosuch",0,1', 'AT+QSSLCFG="seclevel",0,3', 'AT+QSSLRECV=0,1501'):
        assert ec2x.at(line) == b"\r\nERROR\r\n", line
        assert err() == b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"
    # DNS: an unrouted name with the emulator offline
    ec2x.at('AT+QSSLOPEN=1,0,0,"nowhere.example",443')
    assert opened(ec2x, 0) == 565
    assert err() == b"\r\n+QIGETERROR: 565,DNS parse failed\r\n\r\nOK\r\n"
    # TCP connection refused: a port bound (so no one else takes it) but not listening
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        emulator.router.add_map("refused.example", 443, "127.0.0.1", closed.getsockname()[1])
        ec2x.at('AT+QSSLOPEN=1,0,0,"refused.example",443')
        assert opened(ec2x, 0) == 566
    # clientID in use
    with TlsServer(pki.server, legacy=True) as server:
        emulator.router.add_map(MANUAL_HOST, 8010, "127.0.0.1", server.port)
        assert open_example(ec2x) == 0
        assert ec2x.at('AT+QSSLOPEN=1,0,0,"220.180.239.212",8010') == b"\r\nERROR\r\n"
        assert err() == b"\r\n+QIGETERROR: 563,socket identity has been used\r\n\r\nOK\r\n"
        assert ec2x.at("AT+QSSLSEND=1,5") == b"\r\nERROR\r\n"             # not connected
        ec2x.write(b"AT+QSSLSEND=0\r")
        ec2x.read_until(b"> ")
        ec2x.write(b"never mind\x1b")
        assert ec2x.read_until(b"ERROR\r\n") == b"\r\nERROR\r\n"
        assert err() == b"\r\n+QIGETERROR: 571,cancel send\r\n\r\nOK\r\n"
        assert ec2x.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"
        assert err() == b"\r\n+QIGETERROR: 0,operate successfully\r\n\r\nOK\r\n"


def test_certificate_paths_cannot_leave_the_modem_storage(ec2x, net, pki, tmp_path):
    assert ec2x.upload("ca.pem", pki.ca.cert_pem).endswith(b"OK\r\n")
    for name in ("../ca.pem", "UFS:../../etc/passwd", "/etc/passwd"):
        assert ec2x.at(f'AT+QFUPL="{name}",10') == b"\r\n+CME ERROR: 406\r\n"
    with TlsServer(pki.server, legacy=True) as server:
        net(server)
        ec2x.at('AT+QSSLCFG="seclevel",0,1;+QSSLCFG="cacert",0,"UFS:../ufs/ca.pem"')
        assert open_example(ec2x) == 552       # a traversal path names no file


def test_qsslcfg_every_option_stored_queried_range_checked(ec2x):
    cases = {  # option: (default shown, a valid value to set, shown after set, an invalid value)
        "sslversion": ("4", "3", "3", "5"),
        "ciphersuite": ("0XFFFF", "0XC02F", "0XC02F", "0XZZ"),
        "cacert": ('""', '"RAM:ca.pem"', '"RAM:ca.pem"', None),
        "clientcert": ('""', '"c.pem"', '"c.pem"', None),
        "clientkey": ('""', '"k.pem"', '"k.pem"', None),
        "seclevel": ("0", "2", "2", "3"),
        "ignorelocaltime": ("1", "0", "0", "2"),
        "negotiatetime": ("300", "10", "10", "9"),
        "sni": ("0", "1", "1", "2"),
        "closetimemode": ("0", "1", "1", "2"),
        "ignoremulticertchainverify": ("0", "1", "1", "2"),
        "ignoreinvalidcertsign": ("0", "1", "1", "2"),
        "psk": ('"",""', '"id","a1b2"', '"id","a1b2"', None),
        "dtls": ("0", "1", "1", "2"),
        "dtlsversion": ("1", "0", "0", "2"),
        "session_cache": ("1", "0", "0", "2"),
        "alpn": ('""', '"h2,http/1.1"', '"h2,http/1.1"', None),
        "renegotiation": ("0", "1", "1", "2"),
    }
    for name, (default, value, shown, bad) in cases.items():
        query = f'AT+QSSLCFG="{name}",5'
        assert ec2x.at(query) == f'\r\n+QSSLCFG: "{name}",5,{default}\r\n\r\nOK\r\n'.encode(), name
        assert ec2x.at(f'AT+QSSLCFG="{name}",5,{value}') == b"\r\nOK\r\n", name
        assert ec2x.at(query) == f'\r\n+QSSLCFG: "{name}",5,{shown}\r\n\r\nOK\r\n'.encode(), name
        assert ec2x.at(f'AT+QSSLCFG="{name}",4') == f'\r\n+QSSLCFG: "{name}",4,{default}\r\n\r\nOK\r\n'.encode()
        if bad is not None:
            assert ec2x.at(f'AT+QSSLCFG="{name}",5,{bad}') == b"\r\nERROR\r\n", name
    assert ec2x.at('AT+QSSLCFG="ciphersuite",1,"0X0035:0XC02F"') == b"\r\nOK\r\n"
    assert ec2x.at('AT+QSSLCFG="ciphersuite",1') == b'\r\n+QSSLCFG: "ciphersuite",1,0X0035:0XC02F\r\n\r\nOK\r\n'
    assert ec2x.at('AT+QSSLCFG="cacertex",2,"RAM:extra.pem"') == b"\r\nOK\r\n"
    all_ex = ec2x.at('AT+QSSLCFG="cacertex"')
    assert all_ex.count(b'+QSSLCFG: "cacertex",') == 6 and b'"cacertex",2,"RAM:extra.pem"' in all_ex
    assert ec2x.at('AT+QSSLCFG="seclevel",6') == b"\r\nERROR\r\n"
    test = ec2x.at("AT+QSSLCFG=?")
    assert test.count(b"+QSSLCFG: ") == 19
    assert b'+QSSLCFG: "sslversion",(0-5),(0-4)\r\n' in test
    assert b'+QSSLCFG: "negotiatetime",(0-5),(10-300)\r\n' in test
    assert b'+QSSLCFG: "psk",(0-5),<identity>,<key>\r\n' in test


def test_manual_example_3_4_direct_push(ec2x, net, pki):
    with TlsServer(pki.server, legacy=True, handler=reply_after(18, b"Test data from SSL")) as server:
        net(server, port=8011)
        assert ec2x.at('AT+QSSLOPEN=1,1,4,"220.180.239.212",8011,1') == b"\r\nOK\r\n"
        assert opened(ec2x, 4) == 0
        state = ec2x.at("AT+QSSLSTATE")
        assert re.fullmatch(rb'\r\n\+QSSLSTATE: 4,"SSLClient","220\.180\.239\.212",8011,\d+,2,1,4,1,"usbmodem",1'
                            rb"\r\n\r\nOK\r\n", state), state
        assert ec2x.send_data(4, b"Test data from SSL") == b"\r\nSEND OK\r\n"
        # §3.4.3: the data come with the URC, nothing is left for AT+QSSLRECV
        assert ec2x.read_until(b"from SSL\r\n") == b'\r\n+QSSLURC: "recv",4,18\r\nTest data from SSL\r\n'
        assert ec2x.at("AT+QSSLRECV=4,1500") == b"\r\nERROR\r\n"     # pushed: nothing to read
        assert ec2x.at("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"


def test_pdp_deactivation_closes_sockets(ec2x, net, pki):
    with TlsServer(pki.server, legacy=True) as server:
        net(server)
        assert open_example(ec2x, 3) == 0
        assert ec2x.at("AT+QIDEACT=1") == b"\r\nOK\r\n"
        ec2x.seen(b'\r\n+QSSLURC: "closed",3\r\n')
        assert re.search(rb",4,1,3,0,", ec2x.at("AT+QSSLSTATE=3"))     # closing until the host closes it
        assert ec2x.at("AT+QSSLCLOSE=3") == b"\r\nOK\r\n"
