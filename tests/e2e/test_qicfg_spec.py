"""AT+QICFG (Configure Optional TCP/IP Parameters) of the EC2x, pinned from public evidence,
exact bytes over the pty.  Written when the emulator had no AT+QICFG (every test that needed it
was a strict xfail quoting its source); transparent-mode packetization too.

Sources (read through the reference store; quoted, not copied wholesale):

- [EG25] lukejenkins/cwd documentation/quectel_ec2x_and_eg2x/outputs.md, the version whose
  module is a real "Quectel EG25 Revision: EG25GGBR07A08M2G", AT+QGMR
  EG25GGBR07A08M2G_01.003.01.003: the literal answer of AT+QICFG=? (the only EC2x-family
  firmware output found).
- [BG95] BG95&BG77&BG600L Series TCP/IP Application Note V1.1 (2021-03-29), p. 34, AT+QICFG
  parameters and characteristics:
  http://88.208.23.73:8080/en/manual/quectel/bg95-series/3588569?page=35
- [EC200U] EC200U&EG915U Series TCP/IP Application Note V1.1 (2021-08-17) §2.4.1 AT+QICFG
  (stored as MISTERNEGATIVE21/QuectelEC200U src/tcp.txt;
  https://downloads.arduino.cc/libraries/github.com/MISTERNEGATIVE21/QuectelEC200U-2.5.0.zip).
- [BC660K] a BC660K bench log in a public driver ('AT+QICFG="dataformat",1,1' ...
  '+QIURC: "recv",0,2,"4f4b"') and cornucopia-machines/ugly-duckling-firmware's notes
  ('+QIRD: <len>,<remaining>,"<hex>"'): another firmware family, cited only for "the length
  counts bytes, not hex digits".
- The LTE Standard TCP/IP Application Note V1.1 (the EC2x note) itself could not be read past
  its cover page in the store; nothing here quotes it.

What is deliberately NOT pinned (see the report): the letter case of hex output, quotes around
hex data, <send_length> in hex mode, viewmode/dataformat on the direct-push "recv" URC, the
read form of tcp/keepalive after disabling it, defaults of the other options, and behaviour of
qisend/timeout and passiveclosed.
"""
from __future__ import annotations

import re
import time

import pytest

from emulator.testing.peers import UdpEchoServer
from tests.e2e.socket_support import UDP_HOST, UDP_PORT, qiopen, qisend

EG25 = "lukejenkins/cwd outputs.md, EG25GGBR07A08M2G_01.003.01.003"
BG95 = "BG95&BG77&BG600L TCP/IP AN V1.1 p.34"
EC200U = "EC200U&EG915U TCP/IP AN V1.1 s.2.4.1"


def missing(reason: str):
    """Was a bug, fixed: AT+QICFG was not implemented (ERROR); each use keeps the source it
    quoted for the behaviour pinned."""
    return lambda test: test


def not_emulated(reason: str):
    """Was a bug, fixed: AT+QICFG stored transpktsize/transwaittm but transparent mode sent
    what it read at once (packetization was not emulated); each use keeps its source."""
    return lambda test: test


ERROR = b"\r\nERROR\r\n"
OK = b"\r\nOK\r\n"


def read_form(name: str, values: str) -> bytes:
    return f'\r\n+QICFG: "{name}",{values}\r\n\r\nOK\r\n'.encode()


# -- test form --------------------------------------------------------------------------
EG25_TEST_FORM = (
    b'\r\n+QICFG: "transpktsize",(1-1460)\r\n'
    b'+QICFG: "transwaittm",(0-20)\r\n'
    b'+QICFG: "dataformat",(0,1),(0,1)\r\n'
    b'+QICFG: "viewmode",(0,1)\r\n'
    b'+QICFG: "tcp/retranscfg",(3-20),(5-1000)\r\n'
    b'+QICFG: "dns/cache",(0,1)\r\n'
    b'+QICFG: "qisend/timeout",(0-3600)\r\n'
    b'+QICFG: "passiveclosed",(0,1)\r\n'
    b'+QICFG: "udp/readmode",(0,1)\r\n'
    b'+QICFG: "udp/sendmode",(0,1)\r\n'
    b'+QICFG: "tcp/accept",(0,1)\r\n'
    b'+QICFG: "recvind",(0,1)\r\n'
    b'+QICFG: "tcp/keepalive",(0,1),(1-120),(25-100),(3-10)\r\n'
    b'+QICFG: "recv/buffersize",(10240-524288)\r\n'
    b'+QICFG: "window/scale",(0-1)\r\n'
    b'\r\nOK\r\n')


@missing(f"[{EG25}] AT+QICFG=? on a real EG25-G lists every option with its ranges, "
         "one '+QICFG: \"<name>\",<ranges>' line each, in this order")
def test_test_form_lists_every_option_as_a_real_eg25g(ec2x_strict):
    host, _, _ = ec2x_strict
    assert host.at("AT+QICFG=?") == EG25_TEST_FORM


# -- read forms: defaults ------------------------------------------------------------------
@missing(f"[{BG95}] '<transpkt_size> ... Range: 1-1460. Default value: 1024. Unit: byte.' "
         f"'<transwaittm> ... Range: 0-20. Default value: 2. Unit: 100 ms.' [{EC200U}] the same "
         "defaults; 'If the optional parameter is omitted, query the current setting: "
         "+QICFG: \"transpktsize\",<transpktsize>'. dataformat 0,0 / viewmode 0 are the formats "
         "AT+QIRD answers in without AT+QICFG (+QIRD: <len><CR><LF><data>, text)")
@pytest.mark.parametrize("name,default", [("transpktsize", "1024"), ("transwaittm", "2"),
                                          ("dataformat", "0,0"), ("viewmode", "0")])
def test_read_form_gives_the_default(ec2x_strict, name, default):
    host, _, _ = ec2x_strict
    assert host.at(f'AT+QICFG="{name}"') == read_form(name, default)


# -- write then read back, at the ends of each range -----------------------------------------
GOOD = [
    ("transpktsize", "1"), ("transpktsize", "1460"),
    ("transwaittm", "0"), ("transwaittm", "20"),
    ("dataformat", "1,0"), ("dataformat", "0,1"), ("dataformat", "1,1"),
    ("viewmode", "1"),
    ("tcp/retranscfg", "3,5"), ("tcp/retranscfg", "20,1000"),
    ("dns/cache", "0"), ("dns/cache", "1"),
    ("qisend/timeout", "0"), ("qisend/timeout", "3600"),
    ("passiveclosed", "1"),
    ("udp/readmode", "1"), ("udp/sendmode", "1"),
    ("tcp/accept", "0"), ("tcp/accept", "1"),
    ("recvind", "1"),
    ("tcp/keepalive", "1,1,25,3"), ("tcp/keepalive", "1,120,100,10"),
    ("recv/buffersize", "10240"), ("recv/buffersize", "524288"),
    ("window/scale", "1"),
]


@missing(f"[{EG25}] ranges from the module's AT+QICFG=?; [{BG95}]/[{EC200U}] write form "
         "'If the optional parameter is specified ... OK', read form '+QICFG: \"<name>\",<value>'")
@pytest.mark.parametrize("name,values", GOOD)
def test_write_then_read_back(ec2x_strict, name, values):
    host, _, _ = ec2x_strict
    assert host.at(f'AT+QICFG="{name}",{values}') == OK
    assert host.at(f'AT+QICFG="{name}"') == read_form(name, values)


# -- bad values: ERROR (these pass today only because every AT+QICFG is ERROR) ---------------
BAD = [
    ("transpktsize", "0"), ("transpktsize", "1461"),
    ("transwaittm", "21"),
    ("dataformat", "2,0"), ("dataformat", "0,2"), ("dataformat", "1"),
    ("viewmode", "2"),
    ("tcp/retranscfg", "2,600"), ("tcp/retranscfg", "21,600"),
    ("tcp/retranscfg", "12,4"), ("tcp/retranscfg", "12,1001"),
    ("dns/cache", "2"), ("qisend/timeout", "3601"), ("passiveclosed", "2"),
    ("udp/readmode", "2"), ("udp/sendmode", "2"), ("tcp/accept", "2"), ("recvind", "2"),
    ("tcp/keepalive", "2,60,30,5"), ("tcp/keepalive", "1,0,30,5"), ("tcp/keepalive", "1,121,30,5"),
    ("tcp/keepalive", "1,60,24,5"), ("tcp/keepalive", "1,60,101,5"),
    ("tcp/keepalive", "1,60,30,2"), ("tcp/keepalive", "1,60,30,11"),
    ("recv/buffersize", "10239"), ("recv/buffersize", "524289"),
    ("window/scale", "2"),
]


@pytest.mark.parametrize("name,values", BAD)
def test_a_value_out_of_range_is_error(ec2x_strict, name, values):
    """[EC200U]/[BG95]: 'If there is any error: ERROR'; the ranges are the EG25-G's own
    AT+QICFG=? answer ([EG25])."""
    host, _, _ = ec2x_strict
    assert host.at(f'AT+QICFG="{name}",{values}') == ERROR


def test_an_unknown_option_is_error(ec2x_strict):
    host, _, _ = ec2x_strict
    assert host.at('AT+QICFG="nosuchoption",1') == ERROR
    assert host.at('AT+QICFG="nosuchoption"') == ERROR


@missing(f"[{EC200U}]/[{BG95}] 'If there is any error: ERROR' -- a refused value leaves the "
         "setting as it was")
def test_a_refused_value_keeps_the_previous_setting(ec2x_strict):
    host, _, _ = ec2x_strict
    assert host.at('AT+QICFG="transpktsize",512') == OK
    assert host.at('AT+QICFG="transpktsize",0') == ERROR
    assert host.at('AT+QICFG="transpktsize"') == read_form("transpktsize", "512")
    assert host.at('AT+QICFG="viewmode",1') == OK
    assert host.at('AT+QICFG="viewmode",7') == ERROR
    assert host.at('AT+QICFG="viewmode"') == read_form("viewmode", "1")


# -- volatility ------------------------------------------------------------------------------
@missing(f"[{BG95}] 'The command takes effect immediately. The configuration is not saved.' "
         f"[{EC200U}] 'The configuration will not be saved.'")
def test_settings_are_not_saved_across_a_reboot(ec2x):
    assert ec2x.at('AT+QICFG="transpktsize",512') == OK
    assert ec2x.at('AT+QICFG="viewmode",1') == OK
    assert ec2x.at('AT+QICFG="dataformat",1,1') == OK
    ec2x.write(b"AT+CFUN=1,1\r")
    ec2x.read_until(b"+QIND: PB DONE\r\n")
    assert ec2x.at("ATE0").endswith(OK)                   # (echo is back on after the restart)
    assert ec2x.at('AT+QICFG="transpktsize"') == read_form("transpktsize", "1024")
    assert ec2x.at('AT+QICFG="viewmode"') == read_form("viewmode", "0")
    assert ec2x.at('AT+QICFG="dataformat"') == read_form("dataformat", "0,0")


# -- dataformat / viewmode on AT+QISEND and AT+QIRD (buffer access mode) ----------------------
def echo_into_buffer(host, data: bytes) -> None:
    """Socket 0 (buffer access mode) sends `data` as text to the echo peer; the echo waits."""
    assert qisend(host, 0, data) == b"\r\nSEND OK\r\n"
    host.seen(b'+QIURC: "recv",0\r\n')


def qird_raw(host) -> bytes:
    return host.at("AT+QIRD=0,1500")


@missing(f"[{BG95}] '<recv_data_format> Format of the data to be received. 0 Text mode 1 Hex "
         f"mode'; [{EC200U}] 'the module will automatically form two bytes to one ASCII code'. "
         f"The length counts bytes ([BC660K] '+QIURC: \"recv\",0,2,\"4f4b\"')")
def test_recv_hex_mode_qird_gives_hex_digits(ec2x_strict, tcp_echo):
    host, _, _ = ec2x_strict
    assert host.at('AT+QICFG="dataformat",0,1') == OK
    qiopen(host, 0)
    echo_into_buffer(host, b"hi\x00\xff\r\n")
    out = qird_raw(host)
    assert re.fullmatch(rb"\r\n\+QIRD: 6\r\n(?i:686900ff0d0a)\r\n\r\nOK\r\n", out), out


@missing(f"[{BG95}] '<send_data_format> Format of the data to be sent. 0 Text mode 1 Hex mode'; "
         f"[{EC200U}] 'The suffix \"0x\" is not needed ... the module will automatically form two "
         "bytes to one ASCII code' -- hex digits typed after '>' reach the peer as bytes")
def test_send_hex_mode_qisend_sends_the_bytes_the_digits_spell(ec2x_strict, tcp_echo):
    host, _, _ = ec2x_strict
    assert host.at('AT+QICFG="dataformat",1,0') == OK
    qiopen(host, 0)
    host.write("AT+QISEND=0\r")                           # variable length, ended by Ctrl+Z
    assert host.read_until(re.compile(rb"> |\r\nERROR\r\n")).endswith(b"> ")
    host.write(b"00FF0D0A1A41\x1a")                         # NUL, 0xFF, CR, LF, Ctrl+Z, "A"
    assert host.read_until(re.compile(rb"\r\n(SEND OK|SEND FAIL|ERROR)\r\n")) == b"\r\nSEND OK\r\n"
    conn = tcp_echo.wait_connection()
    assert conn.wait_received(6) == b"\x00\xff\r\n\x1aA"


@missing(f"[{BG95}] '<view_mode> Output format of received data. 0 ... data header\\r\\ndata. "
         "1 Output format of received data: data header,data.' (same words in [EC200U])")
def test_viewmode_1_puts_the_qird_header_and_data_on_one_line(ec2x_strict, tcp_echo):
    host, _, _ = ec2x_strict
    assert host.at('AT+QICFG="viewmode",1') == OK
    qiopen(host, 0)
    echo_into_buffer(host, b"hello")
    assert qird_raw(host) == b"\r\n+QIRD: 5,hello\r\n\r\nOK\r\n"


@missing(f"[{BG95}] viewmode 1 'data header,data' with recv_data_format 1 'Hex mode'")
def test_viewmode_1_with_hex_receive(ec2x_strict, tcp_echo):
    host, _, _ = ec2x_strict
    assert host.at('AT+QICFG="viewmode",1') == OK
    assert host.at('AT+QICFG="dataformat",0,1') == OK
    qiopen(host, 0)
    echo_into_buffer(host, b"hello")
    out = qird_raw(host)
    assert re.fullmatch(rb"\r\n\+QIRD: 5,(?i:68656c6c6f)\r\n\r\nOK\r\n", out), out


@missing(f"[{BG95}] 'The command takes effect immediately.' -- on a socket already open")
def test_a_setting_takes_effect_on_an_open_socket(ec2x_strict, tcp_echo):
    host, _, _ = ec2x_strict
    qiopen(host, 0)
    assert host.at('AT+QICFG="viewmode",1') == OK
    echo_into_buffer(host, b"abc")
    assert qird_raw(host) == b"\r\n+QIRD: 3,abc\r\n\r\nOK\r\n"
    assert host.at('AT+QICFG="viewmode",0') == OK
    echo_into_buffer(host, b"xyz")
    assert qird_raw(host) == b"\r\n+QIRD: 3\r\nxyz\r\n\r\nOK\r\n"


def test_without_qicfg_qird_is_text_with_the_header_on_its_own_line(ec2x_strict, tcp_echo):
    """The defaults (dataformat 0,0, viewmode 0) are today's answer: '+QIRD: <len><CR><LF><data>'."""
    host, _, _ = ec2x_strict
    qiopen(host, 0)
    echo_into_buffer(host, b"hello")
    assert qird_raw(host) == b"\r\n+QIRD: 5\r\nhello\r\n\r\nOK\r\n"


# -- recvind -------------------------------------------------------------------------------
@missing(f"[{BG95}] '<recv_ind> ... 1 URC format with data length. URC format is +QIURC: "
         f"\"recv\",<connectID>,<data_len>.' [{EC200U}] 'Enable or disable data length presence "
         "in URC reported after data reception in buffer mode'")
def test_recvind_1_adds_the_length_to_the_buffer_mode_recv_urc(ec2x_strict, tcp_echo):
    host, _, _ = ec2x_strict
    assert host.at('AT+QICFG="recvind",1') == OK
    qiopen(host, 0)
    assert qisend(host, 0, b"hello") == b"\r\nSEND OK\r\n"
    assert host.read_until(re.compile(rb'\+QIURC: "recv"[^\r]*\r\n')) == b'\r\n+QIURC: "recv",0,5\r\n'


# -- transpktsize / transwaittm in transparent access mode (UDP shows the packets) --------------
@pytest.fixture
def udp_sink(emulator):
    """A UDP peer that keeps every datagram and answers nothing, at UDP_HOST:UDP_PORT."""
    with UdpEchoServer(echo=False) as server:
        emulator.router.add_map(UDP_HOST, UDP_PORT, "127.0.0.1", server.port)
        yield server


def open_transparent_udp(host) -> None:
    host.write(f'AT+QIOPEN=1,0,"UDP","{UDP_HOST}",{UDP_PORT},0,2\r')
    assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"


def datagrams(server) -> list[bytes]:
    return [data for _, data in server.log]


@not_emulated(f"[{BG95}] '<transpkt_size> Maximum length of the data packet to be sent'; "
         "'<transwaittm> In transparent transmission mode, if the length of data received from "
         "the port is less than the specified value of <transpkt_size>, after exceeding the time "
         "specified by <transwaittm>, the data will be sent directly. ... Unit: 100 ms.'")
def test_transparent_mode_sends_packets_of_transpktsize_and_the_rest_after_transwaittm(
        ec2x_strict, udp_sink):
    host, advance, _ = ec2x_strict
    assert host.at('AT+QICFG="transpktsize",4') == OK
    assert host.at('AT+QICFG="transwaittm",20') == OK          # 2 s
    open_transparent_udp(host)
    host.write(b"abcdefghij")
    assert [d for _, d in udp_sink.wait_datagrams(2)] == [b"abcd", b"efgh"]
    advance(1.0)                                                # (manual time: nothing is due)
    time.sleep(0.3)
    assert datagrams(udp_sink) == [b"abcd", b"efgh"]
    advance(1.1)
    assert [d for _, d in udp_sink.wait_datagrams(3)] == [b"abcd", b"efgh", b"ij"]


@not_emulated(f"[{BG95}] defaults '<transpkt_size> ... Default value: 1024', '<transwaittm> ... "
         "Default value: 2. Unit: 100 ms' -- without AT+QICFG, 3 bytes wait 200 ms, 1030 bytes "
         "go as 1024 at once and 6 after the wait (today every pty read is sent at once)")
def test_transparent_mode_defaults_are_1024_bytes_and_200_ms(ec2x_strict, udp_sink):
    host, advance, _ = ec2x_strict
    open_transparent_udp(host)
    host.write(b"abc")
    advance(0.1)
    time.sleep(0.3)
    assert datagrams(udp_sink) == []
    advance(0.15)
    assert [d for _, d in udp_sink.wait_datagrams(1)] == [b"abc"]
    block = bytes(range(48, 58)) * 103                          # 1030 digits, no '+'
    host.write(block)
    assert [d for _, d in udp_sink.wait_datagrams(2)][1] == block[:1024]
    advance(0.1)
    time.sleep(0.3)
    assert len(datagrams(udp_sink)) == 2
    advance(0.15)
    assert [d for _, d in udp_sink.wait_datagrams(3)][2] == block[1024:]


# -- decisions around the packet wait (docs/behaviour.md, "AT+QICFG") ------------------------
def test_transwaittm_0_sends_at_once(ec2x_strict, udp_sink):
    host, _, _ = ec2x_strict
    assert host.at('AT+QICFG="transwaittm",0') == OK
    open_transparent_udp(host)
    host.write(b"xyz")
    assert [d for _, d in udp_sink.wait_datagrams(1)] == [b"xyz"]     # no time advanced


def test_the_wait_counts_from_the_oldest_byte_not_the_last(ec2x_strict, udp_sink):
    host, advance, _ = ec2x_strict
    open_transparent_udp(host)
    host.write(b"a")
    time.sleep(0.1)
    advance(0.15)
    host.write(b"b")
    time.sleep(0.1)
    assert datagrams(udp_sink) == []
    advance(0.06)                                   # 210 ms after "a", 60 ms after "b"
    assert [d for _, d in udp_sink.wait_datagrams(1)] == [b"ab"]


def test_escape_sends_what_waited_and_only_once(ec2x_strict, udp_sink):
    host, advance, _ = ec2x_strict
    assert host.at("ATS12=10") == OK                # 200 ms guard times
    assert host.at('AT+QICFG="transwaittm",20') == OK
    open_transparent_udp(host)
    host.write(b"abc")
    time.sleep(0.1)
    advance(0.25)
    host.write(b"+++")
    time.sleep(0.1)
    advance(0.25)                                   # 0.5 s in all: the 2 s wait is not over
    assert host.read_until(b"OK\r\n") == b"\r\nOK\r\n"
    assert [d for _, d in udp_sink.wait_datagrams(1)] == [b"abc"]   # sent at the escape
    advance(2.0)
    time.sleep(0.2)
    assert datagrams(udp_sink) == [b"abc"]
