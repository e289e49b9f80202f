"""AT+QIDEACT resets the context's SSL connections that had ended (docs/behaviour.md, "AT+QIDEACT
after a connection ended").

The TCP(IP) application note: after '+QIURC: "pdpdeact",<cid>' the host "must execute AT+QIDEACT
to deactivate the context and reset all connections" (a driver doing only that: kissTelegram,
tests/e2e/test_adversarial_public_drivers_26.py).  The SSL note §2.3.2: a connection a PDP
deactivation ends is "closing" until AT+QSSLCLOSE.  Both hold here: a connection still up when the
host deactivates ends as the SSL note says (tests/e2e/test_review_manual_reread.py); one that had
ended already -- the network's deactivation, the peer's close -- is reset by AT+QIDEACT, its id free
for the next open, and an AT+QSSLCLOSE on it afterwards is still OK (an SSL-note host).  AT+QIOPEN's
sockets are not reset (a driver following the pdpdeact with AT+QIDEACT then AT+QICLOSE, Toit's,
closes them itself and gets OK)."""
from __future__ import annotations

import re

from emulator.testing.peers import TcpServer, TlsServer
from tests.e2e.socket_support import qiopen
from tests.e2e.test_ssl_ec2x import MANUAL_HOST, open_example, opened

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"


def _state(host, client_id: int) -> bytes:
    return host.at(f"AT+QSSLSTATE={client_id}")


def test_after_the_networks_deactivation_qideact_frees_the_ssl_id(ec2x, net, pki, emulator):
    """pdp_deact: "pdpdeact", "closed", state 4 with the data received before it; AT+QIDEACT=1:
    the id is gone (AT+QSSLSTATE bare OK, AT+QSSLRECV on it ERROR), AT+QSSLCLOSE on it OK, and
    the same id opens again once the context is back."""
    with TlsServer(pki.server, legacy=True, mode="echo") as server:
        net(server, MANUAL_HOST, 8010)
        assert open_example(ec2x, 2) == 0
        assert ec2x.send_data(2, b"kept") == b"\r\nSEND OK\r\n"
        ec2x.seen(b'+QSSLURC: "recv",2\r\n')
        assert emulator.control("pdp_deact", cid=1)["ok"]
        ec2x.seen(b'+QIURC: "pdpdeact",1\r\n')
        ec2x.seen(b'\r\n+QSSLURC: "closed",2\r\n')
        assert re.search(rb",4,1,2,0,", _state(ec2x, 2))              # closing, as the SSL note says
        assert ec2x.at("AT+QIDEACT=1") == OK
        assert _state(ec2x, 2) == OK                                  # reset: "initial", not listed
        assert ec2x.at("AT+QSSLRECV=2,1500") == ERROR                 # what it held went with it
        assert ec2x.at("AT+QSSLCLOSE=2") == OK                        # an SSL-note host: still OK
        assert ec2x.at("AT+QIACT=1") == OK
        assert open_example(ec2x, 2) == 0
        assert ec2x.send_data(2, b"again") == b"\r\nSEND OK\r\n"
        ec2x.seen(b'+QSSLURC: "recv",2\r\n')
        assert ec2x.at("AT+QSSLRECV=2,1500") == b"\r\n+QSSLRECV: 5\r\nagain\r\n" + OK
        assert ec2x.at("AT+QSSLCLOSE=2") == OK
    assert ec2x.transcript.count(b'+QSSLURC: "closed",2') == 1


def test_qideact_frees_an_id_the_peer_closed(ec2x, net, pki):
    """The peer's close (state 4) is an ended connection too: AT+QIDEACT=1 resets it."""
    with TlsServer(pki.server, legacy=True, mode="send_then_close", payload=b"bye") as server:
        net(server, MANUAL_HOST, 8010)
        assert open_example(ec2x, 5) == 0
        ec2x.seen(b'\r\n+QSSLURC: "recv",5\r\n', 10)
        ec2x.seen(b'\r\n+QSSLURC: "closed",5\r\n', 10)
        assert re.search(rb",4,1,5,0,", _state(ec2x, 5))
        assert ec2x.at("AT+QIDEACT=1") == OK
        assert ec2x.at("AT+QSSLSTATE") == OK
        assert ec2x.at("AT+QIACT=1") == OK
        assert ec2x.at(f'AT+QSSLOPEN=1,0,5,"{MANUAL_HOST}",8010') == OK
        assert opened(ec2x, 5) == 0
        ec2x.seen(b'\r\n+QSSLURC: "recv",5\r\n', 10)           # the new connection's "bye"
        ec2x.seen(b'\r\n+QSSLURC: "closed",5\r\n', 10)
        assert ec2x.at("AT+QSSLCLOSE=5") == OK


def test_a_connection_up_at_qideact_ends_closing_and_keeps_its_id(ec2x, net, pki):
    """The SSL note's case: one connection still up, one the peer had closed.  AT+QIDEACT=1 resets
    the ended one; the live one reports "closed" and stays in state 4 (its id taken, 563) until
    AT+QSSLCLOSE."""
    with TlsServer(pki.server, legacy=True, mode="send_then_close", payload=b"x") as closer, \
            TlsServer(pki.server, legacy=True, mode="echo") as echo:
        net(closer, MANUAL_HOST, 8010)
        assert open_example(ec2x, 0) == 0
        ec2x.seen(b'\r\n+QSSLURC: "recv",0\r\n', 10)
        ec2x.seen(b'\r\n+QSSLURC: "closed",0\r\n', 10)
        net(echo, MANUAL_HOST, 8011)
        assert ec2x.at(f'AT+QSSLOPEN=1,0,1,"{MANUAL_HOST}",8011') == OK
        assert opened(ec2x, 1) == 0
        assert ec2x.at("AT+QIDEACT=1") == OK
        ec2x.seen(b'\r\n+QSSLURC: "closed",1\r\n')
        assert _state(ec2x, 0) == OK
        assert re.search(rb",4,1,1,0,", _state(ec2x, 1))
        assert ec2x.at("AT+QIACT=1") == OK
        assert ec2x.at(f'AT+QSSLOPEN=1,0,1,"{MANUAL_HOST}",8011') == ERROR
        assert ec2x.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 563,socket identity has been used\r\n" + OK
        assert ec2x.at("AT+QSSLCLOSE=1") == OK
        assert ec2x.at("AT+QSSLSTATE") == OK


def test_qideact_of_another_context_leaves_the_ssl_id(ec2x, net, pki, emulator):
    """Only the named context's connections are reset."""
    with TlsServer(pki.server, legacy=True, mode="echo") as server:
        net(server, MANUAL_HOST, 8010)
        assert open_example(ec2x, 3) == 0
        assert emulator.control("pdp_deact", cid=1)["ok"]
        ec2x.seen(b'+QIURC: "pdpdeact",1\r\n')
        ec2x.seen(b'\r\n+QSSLURC: "closed",3\r\n')
        assert ec2x.at("AT+QIDEACT=2") == OK
        assert re.search(rb",4,1,3,0,", _state(ec2x, 3))
        assert ec2x.at("AT+QSSLCLOSE=3") == OK
        assert ec2x.at("AT+QSSLSTATE") == OK


def test_qiopen_sockets_are_reset_by_qideact(ec2x, net, emulator):
    """A TCP socket the network's deactivation ended stays until the host's AT+QIDEACT, which
    closes "all TCP/IP connections set up in this context" (TCP(IP) note): its id is free
    then, and AT+QICLOSE on it is OK (nothing open)."""
    with TcpServer("echo") as server:
        emulator.router.add_map("tcp.example", 9000, "127.0.0.1", server.port)
        qiopen(ec2x, 0, addr="tcp.example", port=9000)
        assert emulator.control("pdp_deact", cid=1)["ok"]
        ec2x.seen(b'+QIURC: "pdpdeact",1\r\n')
        ec2x.seen(b'+QIURC: "closed",0\r\n')
        assert re.match(rb'\r\n\+QISTATE: 0,"TCP",', ec2x.at("AT+QISTATE=1,0"))
        assert ec2x.at("AT+QIDEACT=1") == OK
        assert ec2x.at("AT+QISTATE=1,0") == OK
        assert ec2x.at("AT+QICLOSE=0") == OK
        assert ec2x.at("AT+QISTATE=1,0") == OK


def test_the_contexts_loss_during_a_send_prompt_is_error_567_and_sends_nothing(ec2x, net, pki, emulator):
    """docs/behaviour.md (AT+QSSLSEND): the connection ends while the prompt takes the data --
    here the network deactivates the context -- so the send is ERROR with 567 once the data are
    in, not SEND FAIL, and none of it reaches the server."""
    with TlsServer(pki.server, legacy=True, mode="sink") as server:
        net(server, MANUAL_HOST, 8010)
        assert open_example(ec2x, 1) == 0
        conn = server.wait_handshake()
        ec2x.write("AT+QSSLSEND=1,5\r")
        assert ec2x.read_until(re.compile(rb"> ")) == b"\r\n> "
        assert emulator.control("pdp_deact", cid=1)["ok"]
        ec2x.write(b"hello")
        assert ec2x.read_until(re.compile(rb"\r\n(SEND OK|SEND FAIL|ERROR)\r\n")) == ERROR
        ec2x.seen(b'+QIURC: "pdpdeact",1\r\n')                  # (held while the prompt ran)
        ec2x.seen(b'\r\n+QSSLURC: "closed",1\r\n')
        assert re.fullmatch(rb"\r\n\+QIGETERROR: 567,[^\r]+\r\n\r\nOK\r\n", ec2x.at("AT+QIGETERROR"))
        assert conn.received == b""
        assert ec2x.at("AT+QSSLCLOSE=1") == OK
