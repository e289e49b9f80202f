"""The EC2x TCP(IP) commands on the pty against Quectel's published text, command by command.

Sources (quoted briefly in each test):
- [UC15] UC15 TCPIP AT Commands Manual (UMTS/HSPA Module Series), pp. 12-18: the same
  generation as EC20_TCPIP_AT_Commands_Manual_V1.0 (2015-05-08), copied into a public driver's
  comments (AT+QIOPEN, AT+QICLOSE, AT+QISEND, AT+QIRD tables).
- [BG96] BG96 TCP/IP Application Note, §2.2.5 AT+QICLOSE, §2.2.6 AT+QISTATE, §2.2.8 AT+QIRD.
- [BG95] BG95&BG77&BG600L Series TCP/IP Application Note, §2.3.6 AT+QISTATE, §2.3.8 AT+QIRD,
  §2.4 URCs, §2.3.x AT+QIGETERROR, §3.3 examples.
- [BG770A] a real BG770A-GL (fw BG770AGLAAR01A05) capture, byte for byte, in a public
  simulator's golden tests (test forms and empty read forms).
- [ST] ST's X-CUBE-CELLULAR BG96/UG96 parser comments ("IP AT Commands manual - LTE Module
  Series - V1.0": +QIURC list, "dnsgip" header).
The EC2x's own TCP(IP) manual / application note was not legible in full here either (see
docs/behaviour.md); where these texts disagree the test says so and pins the emulator's choice.
Earlier files already pin most parameter errors (test_tcpip.test_bad_input_is_error_with_the_code),
the QISTATE forms, the listener, "incoming full" and the UDP SERVICE; this file adds what they
do not."""
from __future__ import annotations

import re
import socket

import pytest

from tests.e2e.socket_support import (TCP_HOST, TCP_PORT, UDP_HOST, UDP_PORT, error_code, escape,
                                      qiopen, qird, qisend, wait_for)

OK = b"\r\nOK\r\n"


@pytest.fixture
def modem(ec2x_strict):
    """(host, advance, port): EC2x on manual time, context 1 active, no error logged."""
    return ec2x_strict


# -- test and read forms ---------------------------------------------------------------------
@pytest.mark.parametrize("line, answer", [
    # [UC15] "AT+QIOPEN=? Response +QIOPEN: (1-16),(0-11),"TCP/UDP/TCP LISTENER/UDP SERVICE",
    #  "<IP_address>/<domain_name>",<remote_port>,<local_port>,(0-2)"; [BG770A] the same line with (1-5).
    ("AT+QIOPEN=?", b'+QIOPEN: (1-16),(0-11),"TCP/UDP/TCP LISTENER/UDP SERVICE",'
                    b'"<IP_address>/<domain_name>",<remote_port>,<local_port>,(0-2)\r\n\r\n'),
    # [BG96 §2.2.5] "+QICLOSE: (range of supported <connectID>s),(range of supported <timeout>s)",
    # <timeout> 0-65535; [BG770A] "+QICLOSE: (0-11),(0-65535)".  ([UC15] prints a bare OK.)
    ("AT+QICLOSE=?", b"+QICLOSE: (0-11),(0-65535)\r\n\r\n"),
    # [BG95 §2.3.6] "AT+QISTATE=? Response OK"; [BG770A] "AT+QISTATE=?\r\r\nOK".
    ("AT+QISTATE=?", b""),
    # [BG95 §2.3.x] "AT+QIGETERROR=? Response OK".
    ("AT+QIGETERROR=?", b""),
    # [BG770A] +QIDNSCFG: (1-5),<pridnsaddr>,<secdnsaddr> / +QIDNSGIP: (1-5),<hostname> /
    # +QPING: (1-5),<host>,(1-255),(1-10) / +QNTP: (1-5),<server>,(1-65535),(0,1): the EC2x's
    # contexts are 1-16 ([UC15] AT+QIOPEN), the rest of each line is the same.
    ("AT+QIDNSCFG=?", b"+QIDNSCFG: (1-16),<pridnsaddr>,<secdnsaddr>\r\n\r\n"),
    ("AT+QIDNSGIP=?", b"+QIDNSGIP: (1-16),<hostname>\r\n\r\n"),
    ("AT+QPING=?", b"+QPING: (1-16),<host>,(1-255),(1-10)\r\n\r\n"),
    ("AT+QNTP=?", b"+QNTP: (1-16),<server>,(1-65535),(0,1)\r\n\r\n"),
    ("AT+QIACT=?", b"+QIACT: (1-16)\r\n\r\n"),
])
def test_test_forms_as_printed(modem, line, answer):
    host, _, _ = modem
    assert host.at(line) == b"\r\n" + answer + b"OK\r\n"


def test_read_forms_with_nothing_open_are_a_bare_ok(modem):
    """[BG95 §2.3.6] AT+QISTATE? / AT+QISTATE "Return the status of all existing connections"
    -- none: only OK; [BG770A] "AT+QISTATE?\\r\\r\\nOK"."""
    host, _, _ = modem
    assert host.at("AT+QISTATE?") == OK
    assert host.at("AT+QISTATE") == OK
    assert host.at("AT+QISTATE=0,1") == OK


def test_qiopen_read_form_docs_disagree_emulator_answers_error(modem):
    """DOCS DISAGREE (reported, not a bug here): [UC15] lists "Read Command AT+QIOPEN?
    Response OK"; the BG96/BG95 notes list no read form for AT+QIOPEN.  The emulator treats it
    as a form the module lacks (ERROR, AT+QIGETERROR 552), like AT+QIRD? -- pinned here."""
    host, _, _ = modem
    assert host.at("AT+QIOPEN?") == b"\r\nERROR\r\n"
    assert error_code(host) == 552


# -- AT+QIOPEN and AT+QIGETERROR ---------------------------------------------------------------
def test_qiopen_in_use_id_urc_and_qigeterror_text(modem, tcp_echo):
    """[UC15] buffer / push mode: "OK" then "+QIOPEN: <connectID>,<err>", <err> 0 on success;
    [BG95 §2.3.x] "+QIGETERROR: <result>,<result_code_description>"; a real module's log
    (NuModem corpus): "+QIGETERROR: 563,socket identity has been used"."""
    host, _, _ = modem
    qiopen(host, 0)
    line = f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0'
    assert host.at(line) == OK
    assert host.read_until(b"+QIOPEN: 0,563\r\n").endswith(b"\r\n+QIOPEN: 0,563\r\n")
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 563,socket identity has been used\r\n\r\nOK\r\n"


def test_transparent_open_is_connect_without_ok_and_state_keeps_mode_2(modem, tcp_echo):
    """[UC15] "If the <access_mode> is transparent access mode and it is successful to start
    the service, response: CONNECT"; leaving with "+++" returns OK (the EC20 R2.1 TCP command
    summary, CSDN, §1.2: "+++" exits transparent mode, "返回 OK"), the socket stays open: [BG96 §2.2.6] <access_mode> in AT+QISTATE."""
    host, advance, _ = modem
    host.write(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r')
    assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"
    host.write(b"ping")
    advance(0.3)                                 # AT+QICFG "transwaittm" default 2 (x 100 ms)
    assert host.read_until(b"ping") == b"ping"                     # the echo, unframed
    assert escape(host, advance) == OK
    assert re.fullmatch(rb'\r\n\+QISTATE: 0,"TCP","[\d.]+",7000,\d+,2,1,0,2,"usbmodem"\r\n\r\nOK\r\n',
                        host.at("AT+QISTATE=1,0"))
    host.write("ATO\r")
    assert host.read_until(b"\r\nCONNECT\r\n") == b"\r\nCONNECT\r\n"
    assert escape(host, advance) == OK
    assert host.at("AT+QICLOSE=0") == OK


# -- AT+QIRD / AT+QISEND counters --------------------------------------------------------------
def test_qird_and_qisend_zero_counters_through_a_partial_read(modem, tcp_echo):
    """[BG96 §2.2.8] AT+QIRD=<connectID>,0 -> "+QIRD: <total_receive_length>,<have_read_length>,
    <unread_length>"; [UC15] AT+QISEND=<connectID>,0 -> "+QISEND: <total_send_length>,
    <ackedbytes>,<unackedbytes>"; [BG95 §3.3] "AT+QISEND=0,4 >test SEND OK ... +QIURC:
    "recv",0 ... AT+QIRD=0,1500 +QIRD: 5 ... AT+QIRD=0,1500 +QIRD: 0 ... AT+QIRD=0,0 +QIRD: 5,5,0"."""
    host, _, _ = modem
    qiopen(host, 0)
    assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 0,0,0\r\n\r\nOK\r\n"
    assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 0,0,0\r\n\r\nOK\r\n"
    assert qisend(host, 0, b"test") == b"\r\nSEND OK\r\n"
    assert host.seen(b'+QIURC: "recv",0\r\n') == b'+QIURC: "recv",0\r\n'   # no length by default
    assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 4,4,0\r\n\r\nOK\r\n"
    assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 4,0,4\r\n\r\nOK\r\n"
    head, data = qird(host, 0, 3)
    assert head.endswith(b"\r\n+QIRD: 3\r\n") and data == b"tes"
    assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 4,3,1\r\n\r\nOK\r\n"
    assert qird(host, 0)[1] == b"t"
    assert host.at("AT+QIRD=0,1500") == b"\r\n+QIRD: 0\r\n\r\nOK\r\n"
    assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 4,4,0\r\n\r\nOK\r\n"
    assert host.at("AT+QICLOSE=0") == OK


def test_udp_client_qird_has_no_address_udp_service_has_it(modem, udp_echo):
    """[BG95 §2.3.8] "When <service_type> is "TCP", "UDP" or "TCP INCOMING" ... +QIRD:
    <read_actual_length><CR><LF><data>"; "UDP SERVICE ... +QIRD: <read_actual_length>,<remoteIP>,
    <remote_port><CR><LF><data>" (<remoteIP> "String type": quoted)."""
    host, _, _ = modem
    qiopen(host, 1, "UDP", UDP_HOST, UDP_PORT)
    assert qisend(host, 1, b"dgram") == b"\r\nSEND OK\r\n"
    host.seen(b'+QIURC: "recv",1\r\n')
    head, data = qird(host, 1)
    assert head.endswith(b"\r\n+QIRD: 5\r\n") and data == b"dgram"
    service = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    service.bind(("127.0.0.1", 0))
    port = service.getsockname()[1]
    service.close()
    qiopen(host, 2, "UDP SERVICE", "127.0.0.1", 0, local_port=port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.sendto(b"hi", ("127.0.0.1", port))
        host.seen(b'+QIURC: "recv",2\r\n')
        head, data = qird(host, 2)
        assert head.endswith(f'\r\n+QIRD: 2,"127.0.0.1",{peer.getsockname()[1]}\r\n'.encode()) and data == b"hi"
    assert host.at("AT+QICLOSE=1") == OK and host.at("AT+QICLOSE=2") == OK


# -- URCs ---------------------------------------------------------------------------------------
def test_closed_urc_then_state_4_then_qiclose_frees_the_id(modem, peer_factory):
    """[BG95 §2.4.1] "+QIURC: "closed",<connectID>" ... "the status of socket service is closing
    (<socket_state>=4). AT+QICLOSE=<connectID> can be used to change the <socket_state> to
    initial"; [UC15] AT+QISEND: "If connection has not been established, abnormally closed ...
    ERROR"."""
    host, _, _ = modem
    peer = peer_factory()
    qiopen(host, 0)
    peer.close()
    assert host.seen(b'+QIURC: "closed",0\r\n') == b'+QIURC: "closed",0\r\n'
    assert re.fullmatch(rb'\r\n\+QISTATE: 0,"TCP","[\d.]+",7000,\d+,4,1,0,0,"usbmodem"\r\n\r\nOK\r\n',
                        host.at("AT+QISTATE=1,0"))
    assert host.at("AT+QISEND=0,1") == b"\r\nERROR\r\n"
    assert host.at("AT+QICLOSE=0,0") == OK                         # <timeout> 0 is in range
    assert host.at("AT+QISTATE=1,0") == OK


def test_push_mode_recv_urc_carries_the_length_then_the_data(modem, tcp_echo):
    """[BG95 §2.4.2] "+QIURC: "recv",<connectID>,<currentrecvlength><CR><LF><data>" in direct
    push mode for "TCP", the data then ended by CR LF (as real modules write a push;
    docs/behaviour.md, "Direct push"); nothing to read with AT+QIRD afterwards."""
    host, _, _ = modem
    qiopen(host, 3, mode=1)
    assert qisend(host, 3, b"pushed") == b"\r\nSEND OK\r\n"
    assert host.seen(re.compile(rb'\+QIURC: "recv",3,6\r\npushed\r\n')) == b'+QIURC: "recv",3,6\r\npushed\r\n'
    assert host.at("AT+QIRD=3,0") == b"\r\n+QIRD: 6,6,0\r\n\r\nOK\r\n"
    assert host.at("AT+QICLOSE=3") == OK


def test_dnsgip_header_and_address_lines(modem):
    """[ST] "header: +QIURC: "dnsgip",<err>,<IP_count>,<DNS_ttl>  infos: +QIURC: "dnsgip",
    <hostIPaddr>"; the command itself answers OK first."""
    host, _, _ = modem
    host.write('AT+QIDNSGIP=1,"127.0.0.1"\r')
    out = host.read_until(b'+QIURC: "dnsgip","127.0.0.1"\r\n')
    assert out == b'\r\nOK\r\n\r\n+QIURC: "dnsgip",0,1,0\r\n\r\n+QIURC: "dnsgip","127.0.0.1"\r\n', out


def test_qiclose_timeout_edges(modem, tcp_echo):
    """[BG96 §2.2.5] "<timeout> ... Range: 0-65535. Default value: 10"."""
    host, _, _ = modem
    qiopen(host, 0)
    assert host.at("AT+QICLOSE=0,65536") == b"\r\nERROR\r\n"
    assert error_code(host) == 552
    assert host.at("AT+QICLOSE=0,65535") == OK
    wait_for(lambda: host.at("AT+QISTATE?") == OK, what="the id freed")


def test_buffer_mode_recv_urc_once_until_the_buffer_is_read_empty(modem, tcp_echo):
    """[BG95 §2.4.2] "if the buffer is not empty, and the module receives data again, it does
    not report a new URC until all the received data has been retrieved with AT+QIRD"."""
    host, _, _ = modem
    qiopen(host, 0)
    urc = b'+QIURC: "recv",0\r\n'
    assert qisend(host, 0, b"one") == b"\r\nSEND OK\r\n"
    host.seen(urc)
    assert qisend(host, 0, b"two") == b"\r\nSEND OK\r\n"
    wait_for(lambda: host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 6,0,6\r\n\r\nOK\r\n", what="both echoed")
    assert host.transcript.count(urc) == 1
    assert qird(host, 0)[1] == b"onetwo"
    assert qisend(host, 0, b"three") == b"\r\nSEND OK\r\n"
    host.seen(urc)                                                 # a new one: the buffer was empty
    assert host.transcript.count(urc) == 2
    assert qird(host, 0)[1] == b"three"
    assert host.at("AT+QICLOSE=0") == OK
