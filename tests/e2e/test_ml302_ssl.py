"""ML302 SSL commands over the pty, against Python ssl (OpenSSL) servers
(emulator.testing.peers.TlsServer serving the manual's test page).

Every host name is routed to a loopback server; www.iottest.work also gets the
manual's DNS answer (Router.add_dns), so <ipaddr> in +QSSLRECV / +QSSLSTATE is
106.12.79.254 as in the manual, never the routed 127.0.0.1.
"""
from __future__ import annotations

import ipaddress
import socket

import pytest

from emulator.testing.peers import TlsServer, default_pki, utc
from emulator.tools.demo_peer import IOTTEST_RESPONSE
from tests.e2e.ml302_support import HOST, HOST_IP, routed_servers

REQUEST = (b"GET https://www.iottest.work/test.html HTTP/1.1\r\n"
           b"Host: www.iottest.work\r\nConnection: keep-alive\r\n\r\n")


@pytest.fixture(scope="module")
def pki():
    """trustme objects from the shared PKI (RSA: the ML302 suites are all RSA key exchange)."""
    shared = default_pki()
    return {"ca": shared.ca.ca, "wrong_ca": shared.wrong_ca.ca,
            "server": shared.issue("ml302-server", HOST).leaf,
            "server_2019": shared.issue("ml302-2019", HOST, not_before=utc(2019, 1, 1),
                                        not_after=utc(2019, 12, 31)).leaf,
            "client": shared.issue("ml302-client", "ml302-client.test").leaf}


@pytest.fixture
def server(pki, emulator):
    """server(cert=..., client_ca=...) -> TlsServer routed as www.iottest.work:443,
    the name the modem's DNS answers as 106.12.79.254."""
    routed = routed_servers(emulator, pki["server"], mode="http", ciphers="DEFAULT:@SECLEVEL=0")
    started = next(routed)

    def start(cert: str = "server", client_ca=None) -> TlsServer:
        return started(cert=pki[cert], client_ca=client_ca, require_client_cert=client_ca is not None)
    yield start
    next(routed, None)                 # closes them


def exchange(host, sent: bytes | str, expected: bytes) -> None:
    """Write `sent`, then the next bytes from the module must be exactly `expected`."""
    host.write(sent)
    assert host.read_exactly(len(expected)) == expected


def at(host, command: str, expected: bytes) -> None:
    exchange(host, command + "\r", expected)


def secwrite(host, slot: int, data: bytes) -> None:
    host.write(f"AT+QSECDEL={slot}\r")
    host.read_until(b"OK\r\n")
    host.write(f"AT+QSECWRITE={slot}\r")
    host.read_until(b"\r\n> ")
    host.write(data + b"\x1a")
    host.read_until(b"OK\r\n")


def attach(host) -> None:
    at(host, 'AT+CGDCONT=1,"IP","CMNET"', b"\r\nOK\r\n")
    at(host, "AT+CGACT=1,1", b"\r\n+CGACT: 1, 1, 10.127.79.43\r\n\r\nOK\r\n")


def expect_urc(host, line: str, timeout: float = 20) -> None:
    """The next bytes are this URC (nothing before it)."""
    framed = f"\r\n{line}\r\n".encode()
    assert host.read_until(framed, timeout=timeout) == framed


def open_ssl(host, ssid: int = 0, code: int = 0, args: str = "") -> None:
    at(host, f'AT+QSSLOPEN={ssid},0,"{HOST}",443,0{args}', b"\r\nOK\r\n")
    expect_urc(host, f"+QSSLOPEN: {ssid},{code}")


def fetch_page(host, ssid: int = 0) -> None:
    host.write(f"AT+QSSLSEND={ssid}\r")
    assert host.read_exactly(4) == b"\r\n> "
    exchange(host, REQUEST + b"\x1a", b"\r\nSEND OK\r\n")
    expect_urc(host, f'+QSSLURC: "recv",1,{ssid}')
    at(host, f"AT+QSSLRECV=1,{ssid},1460",
       f"\r\n+QSSLRECV: {HOST_IP}:443,TCP,{len(IOTTEST_RESPONSE)}\r\n".encode()
       + IOTTEST_RESPONSE + b"\r\n\r\nOK\r\n")


# -- manual §3, at every seclevel ------------------------------------------------------
def test_manual_section3_replay(open_modem, server):
    """§3 byte for byte with echo on (the manual's session), <ipaddr> included (the
    DNS entry, not the loopback route), except the "+QSSLURC:" typo and SEND OK's extra OK."""
    server()
    host, _ = open_modem("ml302", echo=True)
    for line, answer in (('AT+CGDCONT=1,"IP","CMNET"', b"\r\nOK\r\n"),
                         ("AT+CGACT=1,1", b"\r\n+CGACT: 1, 1, 10.127.79.43\r\n\r\nOK\r\n"),
                         ('AT+QSSLCFG="seclevel",0,0', b"\r\nOK\r\n"),
                         ('AT+QSSLOPEN=0,0,"www.iottest.work",443,0', b"\r\nOK\r\n")):
        at(host, line, line.encode() + b"\r" + answer)
    expect_urc(host, "+QSSLOPEN: 0,0")
    at(host, "AT+QSSLSEND=0", b"AT+QSSLSEND=0\r\r\n> ")
    exchange(host, REQUEST + b"\x1a", REQUEST + b"\r\nSEND OK\r\n")       # ATE1 echoes the data
    expect_urc(host, '+QSSLURC: "recv",1,0')
    at(host, "AT+QSSLRECV=1,0,1460", b"AT+QSSLRECV=1,0,1460\r\r\n+QSSLRECV: 106.12.79.254:443,TCP,434\r\n"
       + IOTTEST_RESPONSE + b"\r\n\r\nOK\r\n")
    # Not in §3: the AT+QSSLSTATE line (§2.9's form) shows the same DNS answer.
    at(host, "AT+QSSLSTATE", b"AT+QSSLSTATE\r" + state_lines({0: '"106.12.79.254",443,"CONNECTED"'}))
    at(host, "AT+QSSLCLOSE=0", b"AT+QSSLCLOSE=0\r\r\nOK\r\n\r\n0,CLOSE OK\r\n")
    assert host.quiet_for(0.3) == b""


@pytest.mark.parametrize("seclevel", [1, 2])
def test_seclevels_with_right_and_wrong_ca(ml302, server, pki, seclevel):
    ca = pki["ca"]
    server(client_ca=ca if seclevel == 2 else None)
    attach(ml302)
    secwrite(ml302, 0, ca.cert_pem.bytes())
    if seclevel == 2:
        secwrite(ml302, 1, pki["client"].cert_chain_pems[0].bytes())
        secwrite(ml302, 2, pki["client"].private_key_pem.bytes())
        at(ml302, 'AT+QSSLCFG="seclevel",0,1', b"\r\nOK\r\n")
        open_ssl(ml302, code=-1)             # the server insists on a client certificate
    at(ml302, f'AT+QSSLCFG="seclevel",0,{seclevel}', b"\r\nOK\r\n")
    open_ssl(ml302)
    fetch_page(ml302)
    at(ml302, "AT+QSSLCLOSE=0", b"\r\nOK\r\n\r\n0,CLOSE OK\r\n")
    secwrite(ml302, 0, pki["wrong_ca"].cert_pem.bytes())
    open_ssl(ml302, code=-1)                 # no resumption: the new CA is used at once
    at(ml302, "AT+QSECDEL=0", b"\r\nOK\r\n")
    open_ssl(ml302, code=-1)                 # empty slot


def test_ignorertctime_checks_the_modem_clock(ml302, server, pki):
    server(cert="server_2019")                  # valid in 2019 only
    attach(ml302)
    secwrite(ml302, 0, pki["ca"].cert_pem.bytes())
    at(ml302, 'AT+QSSLCFG="seclevel",0,1', b"\r\nOK\r\n")
    at(ml302, 'AT+QSSLCFG="ignorertctime"', b'\r\n+QSSLCFG: "ignorertctime",1\r\n\r\nOK\r\n')
    at(ml302, 'AT+CCLK="25/01/01,00:00:00+32"', b"\r\nOK\r\n")
    open_ssl(ml302)                             # dates ignored by default
    at(ml302, "AT+QSSLCLOSE=0", b"\r\nOK\r\n\r\n0,CLOSE OK\r\n")
    at(ml302, 'AT+QSSLCFG="ignorertctime",0', b"\r\nOK\r\n")
    at(ml302, 'AT+QSSLCFG="ignorertctime"', b'\r\n+QSSLCFG: "ignorertctime",0\r\n\r\nOK\r\n')
    open_ssl(ml302, code=-1)                    # expired at the modem clock
    at(ml302, 'AT+CCLK="19/10/12,09:05:55+32"', b"\r\nOK\r\n")
    open_ssl(ml302)                             # the manual's date: valid
    at(ml302, "AT+QSSLCLOSE=0", b"\r\nOK\r\n\r\n0,CLOSE OK\r\n")
    at(ml302, 'AT+QSSLCFG="ignorertctime",2', b"\r\nERROR\r\n")


# -- AT+QSSLCFG ----------------------------------------------------------------------
def cfg(host, text: str, expected: bytes) -> None:
    at(host, f"AT+QSSLCFG={text}", expected)

def test_qsslcfg_set_query_and_ranges(ml302):
    OK, ERROR = b"\r\nOK\r\n", b"\r\nERROR\r\n"
    at(ml302, "AT+QSSLCFG=?", b'\r\n+QSSLCFG: "type",(0-5),"value"\r\n\r\nOK\r\n')
    cfg(ml302, '"ctxindex",3',
        b'\r\n+QSSLCFG: 3,4,0,0XFFFF,"/caCrt.pem","/clientCrt.pem","/privateKey.pem"\r\n\r\nOK\r\n')
    good = {"sslversion": ("4", "0", "5"), "seclevel": ("0", "2", "3"),
            "ciphersuite": ("0XFFFF", "0X0035:0X002F", "0XC02F"),
            "cacert": ('"/caCrt.pem"', '"/caCrt.pem"', '"' + "x" * 81 + '"'),
            "clientcert": ('"/clientCrt.pem"', '"/clientCrt.pem"', None),
            "clientkey": ('"/privateKey.pem"', '"/privateKey.pem"', None)}
    for name, (default, value, bad) in good.items():
        cfg(ml302, f'"{name}",1', f'\r\n+QSSLCFG: "{name}",{default}\r\n\r\nOK\r\n'.encode())
        cfg(ml302, f'"{name}",1,{value}', OK)
        cfg(ml302, f'"{name}",1', f'\r\n+QSSLCFG: "{name}",{value}\r\n\r\nOK\r\n'.encode())
        cfg(ml302, f'"{name}",6,{value}', ERROR)              # no context 6
        cfg(ml302, f'"{name}",1,{value},1', ERROR)             # one value too many
        if bad is not None:
            cfg(ml302, f'"{name}",1,{bad}', ERROR)
    cfg(ml302, '"ciphersuite",1,"0X0035:0XFFFF"', ERROR)
    cfg(ml302, '"ciphersuite",1,"AES256-SHA"', ERROR)
    cfg(ml302, '"seclevel",1,-1', ERROR)
    cfg(ml302, '"ctxindex",1',
        b'\r\n+QSSLCFG: 1,0,2,0X0035:0X002F,"/caCrt.pem","/clientCrt.pem","/privateKey.pem"\r\n\r\nOK\r\n')
    cfg(ml302, '"ctxindex",0',
        b'\r\n+QSSLCFG: 0,4,0,0XFFFF,"/caCrt.pem","/clientCrt.pem","/privateKey.pem"\r\n\r\nOK\r\n')
    for name, default, value, bad in (("ignorertctime", 1, 0, 2), ("https", 0, 1, 2), ("httpsctxi", 0, 5, 6)):
        cfg(ml302, f'"{name}"', f'\r\n+QSSLCFG: "{name}",{default}\r\n\r\nOK\r\n'.encode())
        cfg(ml302, f'"{name}",{value}', OK)
        cfg(ml302, f'"{name}"', f'\r\n+QSSLCFG: "{name}",{value}\r\n\r\nOK\r\n'.encode())
        cfg(ml302, f'"{name}",{bad}', ERROR)
        cfg(ml302, f'"{name}",{value},0', ERROR)
    for text in ('"ctxindex"', '"ctxindex",6', '"sni",0,1', '"negotiatetime",0,10', '"nosuch",0', ""):
        cfg(ml302, text, ERROR)
    at(ml302, "AT+QSSLCFG?", ERROR)


# -- AT+QSSLOPEN / SEND / RECV / CLOSE / STATE -------------------------------------------
def state_lines(lines: dict[int, str], state: str = "IP PROCESSING") -> bytes:
    """AT+QSSLSTATE's answer: the <state> line, then '"<ipadd>",<port>,"<status>"' of the given
    sockets, INITIAL for the others."""
    body = f'+QSSLSTATE: "{state}"\r\n' + "".join(f'+QSSLSTATE: {i},"TCP",{lines.get(i, chr(34) * 2 + ",0," + chr(34) + "INITIAL" + chr(34))},1\r\n'
                   for i in range(6))
    return f"\r\n{body}\r\nOK\r\n".encode()


def test_state_peer_close_and_timeout(open_modem, server, emulator):
    ml302, port = open_modem("ml302", manual_time=True)      # the 10 s <timeout> on the modem's clock
    at(ml302, "AT+QSSLSTATE", state_lines({}, "IP INITIAL"))
    srv = server()
    attach(ml302)
    open_ssl(ml302, ssid=2)
    connected = f'"{HOST_IP}",443,"CONNECTED"'
    at(ml302, "AT+QSSLSTATE", state_lines({2: connected}))
    open_ssl(ml302, ssid=2, code=-2)                     # in use: the socket is untouched
    at(ml302, "AT+QSSLSTATE", state_lines({2: connected}))
    at(ml302, "AT+QSSLRECV=0,2,1460", b"\r\nOK\r\n")        # nothing yet
    # A listener that never accepts: TCP connects, the ClientHello stays unanswered.
    silent = socket.create_server(("127.0.0.1", 0))
    emulator.router.add_map("silent.test", 443, "127.0.0.1", silent.getsockname()[1])
    made_up = emulator.router.display_address("silent.test")   # no DNS entry: never the route
    assert ipaddress.ip_address(made_up) in ipaddress.ip_network("198.18.0.0/15")
    at(ml302, 'AT+QSSLOPEN=4,0,"silent.test",443,0,10', b"\r\nOK\r\n")
    connecting = state_lines({2: connected, 4: f'"{made_up}",443,"CONNECTING"'})
    for _ in range(100):                                 # <ipadd> appears once TCP is connected
        ml302.write("AT+QSSLSTATE\r")
        if ml302.read_until(b"OK\r\n") == connecting:
            break
    else:
        pytest.fail("socket 4 never showed CONNECTING with its address")
    # The peer closes after answering a "Connection: close" request.
    ml302.write("AT+QSSLSEND=2\r")
    assert ml302.read_exactly(4) == b"\r\n> "
    exchange(ml302, REQUEST.replace(b"keep-alive", b"close") + b"\x1a", b"\r\nSEND OK\r\n")
    urcs = b'\r\n+QSSLURC: "recv",1,2\r\n\r\n+QSSLURC: "close",2\r\n'
    assert ml302.read_exactly(len(urcs)) == urcs
    at(ml302, "AT+QSSLSTATE", state_lines({2: f'"{HOST_IP}",443,"REMOTE CLOSING"',
                                           4: f'"{made_up}",443,"CONNECTING"'}))
    at(ml302, "AT+QSSLSEND=2", b"\r\nERROR\r\n")
    at(ml302, "AT+QSSLRECV=1,2,100",                       # data received before the close stays readable
       f"\r\n+QSSLRECV: {HOST_IP}:443,TCP,100\r\n".encode() + IOTTEST_RESPONSE[:100] + b"\r\n\r\nOK\r\n")
    at(ml302, "AT+QSSLRECV=1,2,1460",
       f"\r\n+QSSLRECV: {HOST_IP}:443,TCP,334\r\n".encode() + IOTTEST_RESPONSE[100:] + b"\r\n\r\nOK\r\n")
    at(ml302, "AT+QSSLRECV=1,2,1460", b"\r\nOK\r\n")
    at(ml302, "AT+QSSLCLOSE=2", b"\r\nOK\r\n\r\n2,CLOSE OK\r\n")
    # <timeout> 10 s bounds the unanswered handshake: -1, then CLOSED.
    emulator.wait_received(port, ml302.written)
    emulator.advance(port, 9.9)
    assert ml302.quiet_for(0.05) == b""
    emulator.advance(port, 0.1)
    expect_urc(ml302, "+QSSLOPEN: 4,-1", timeout=30)
    at(ml302, "AT+QSSLSTATE", state_lines({2: f'"{HOST_IP}",443,"CLOSED"', 4: f'"{made_up}",443,"CLOSED"'},
                                          "IP STATUS"))
    silent.close()
    open_ssl(ml302, ssid=2)                              # a closed ssid can be used again
    at(ml302, "AT+QSSLSTATE", state_lines({2: connected, 4: f'"{made_up}",443,"CLOSED"'}))
    # The bearer goes: the "close" URC follows the command's OK.
    at(ml302, "AT+CGACT=0,1", b'\r\nOK\r\n\r\n+QSSLURC: "close",2\r\n')
    assert not srv.errors


def test_forms_errors_and_refusals(ml302, server):
    OK, ERROR = b"\r\nOK\r\n", b"\r\nERROR\r\n"
    for command, answer in (
            ("AT+QSSLOPEN=?", "+QSSLOPEN: <ssid>,<ctxindex>,<ipaddr/domainname>,<port>,<connectmode>[,<timeout>]"),
            ("AT+QSSLSEND=?", "+QSSLSEND: (0-5)"),
            ("AT+QSSLRECV=?", "+QSSLRECV: (0,1),(0-5),(1,1500)"),
            ("AT+QSSLCLOSE=?", "+QSSLCLOSE: (0-5)[,(0,1)]")):
        at(ml302, command, f"\r\n{answer}\r\n\r\nOK\r\n".encode())
    for command in ("AT+QSSLOPEN?", "AT+QSSLSEND?", "AT+QSSLRECV?", "AT+QSSLCLOSE?", "AT+QSSLSTATE?",
                    "AT+QSSLSTATE=?"):
        at(ml302, command, OK)
    at(ml302, "AT+QSSLCLOSE=5,1", OK + b"\r\n5,CLOSE OK\r\n")    # nothing open: closed all the same
    open_ssl(ml302, code=-1)                             # no active PDP context
    server()
    attach(ml302)
    for command in ('AT+QSSLOPEN=6,0,"h",443,0', 'AT+QSSLOPEN=0,6,"h",443,0', 'AT+QSSLOPEN=0,0,"",443,0',
                    'AT+QSSLOPEN=0,0,"h",0,0', 'AT+QSSLOPEN=0,0,"h",443', 'AT+QSSLOPEN=0,0,"h",443,2',
                    'AT+QSSLOPEN=0,0,"h",443,0,9', 'AT+QSSLOPEN=0,0,"h",443,0,301',
                    "AT+QSSLSEND=0", "AT+QSSLSEND=6", "AT+QSSLRECV=1,0,10", "AT+QSSLRECV=2,0,10",
                    "AT+QSSLCLOSE=6", "AT+QSSLCLOSE=0,2"):
        at(ml302, command, ERROR)
    assert ml302.quiet_for(0.3) == b""                   # nothing was opened
    open_ssl(ml302, args=",300")
    for command in ("AT+QSSLRECV=1,0,0", "AT+QSSLRECV=1,0,1501", "AT+QSSLRECV=1,0", "AT+QSSLSEND=0,5"):
        at(ml302, command, ERROR)
    ml302.write("AT+QSSLSEND=0\r")
    assert ml302.read_exactly(4) == b"\r\n> "
    exchange(ml302, b"GET / HTTP/1.1\r\n\x1b", OK)        # ESC: cancelled, nothing sent
    assert ml302.quiet_for(0.5) == b""
    ml302.write("AT+QSSLSEND=0\r")
    assert ml302.read_exactly(4) == b"\r\n> "
    exchange(ml302, b"x" * 1461 + b"\x1a", ERROR)          # over the 1460-byte send limit
    fetch_page(ml302)
