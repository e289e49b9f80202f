"""A port with no hang-up line (the CLI's --uart, Emulator.add_modem(hangup_on_close=False)):
the host closing the pty is not seen by the modem, as a module on a UART with no DTR wired
(a Raspberry Pi HAT on /dev/ttyS0) never sees its host's close.  By default a close is a
hang-up (docs/behaviour.md, "The host closes the port"); these tests hold the other wiring."""
from __future__ import annotations

import time

from emulator.modem.pdp import data_counter
from emulator.testing.host import Host
from emulator.testing.peers import TcpServer
from tests.e2e.cli_support import first_line, start, stop

OK = b"\r\nOK\r\n"


def close_and_wait(host: Host, emulator, port) -> None:
    """Close the port and wait until the emulator has seen the close."""
    host.close()
    deadline = time.monotonic() + 10
    while emulator.run(lambda: port.port.attached):
        assert time.monotonic() < deadline, "the close was never seen"
        time.sleep(0.01)


def reopen(host: Host, emulator, port) -> Host:
    """Close the port, wait until the emulator has seen the close, open it again."""
    close_and_wait(host, emulator, port)
    again = Host(port.path)
    emulator.run(port.port.look_for_host)
    return again


def test_a_half_typed_line_goes_on_after_a_close(open_modem, emulator):
    """A UART module keeps the characters it got: "AT+CS", close, reopen, "Q<CR>" is AT+CSQ.
    With the default wiring the close ends the line and "Q<CR>" is nothing."""
    for hangup_on_close, answer in ((False, b"\r\n+CSQ: 24,99\r\n" + OK), (True, b"")):
        host, port = open_modem("ec2x", hangup_on_close=hangup_on_close)
        host.write(b"AT+CS")
        emulator.wait_received(port, host.written)
        host = reopen(host, emulator, port)
        try:
            host.write(b"Q\r")
            if answer:
                assert host.read_until(OK) == answer
            else:
                assert host.quiet_for(0.3) == b""
                assert host.at("AT") == OK                # a fresh command state
        finally:
            host.close()


def test_a_data_prompt_keeps_counting_bytes_after_a_close(open_modem, emulator):
    """AT+QFUPL's CONNECT, two of five bytes, close, reopen, three more: the file has all five
    and the +QFUPL answer reaches the reopened port."""
    host, port = open_modem("ec2x", hangup_on_close=False)
    host.write(b'AT+QFUPL="UFS:uart.txt",5\r')
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    host.write(b"ab")
    emulator.wait_received(port, host.written)
    host = reopen(host, emulator, port)
    try:
        host.write(b"cde")
        assert host.read_until(OK).startswith(b"\r\n+QFUPL: 5,")
        host.write(b'AT+QFDWL="UFS:uart.txt"\r')
        assert host.read_until(OK).startswith(b"\r\nCONNECT\r\nabcde\r\n+QFDWL: 5,")
    finally:
        host.close()


def test_online_mode_stays_online_after_a_close_and_output_meanwhile_is_lost(open_modem, emulator):
    """Transparent mode: the host closes; what the server sends while nobody holds the port
    goes nowhere (a UART's bytes with no listener); the host reopens and its next bytes still
    go to the server (no "+++", no ATO), and the echo comes back to it."""
    host, port = open_modem("ec2x", hangup_on_close=False)
    with TcpServer("echo") as server:
        emulator.router.add_map("198.51.100.7", 9100, "127.0.0.1", server.port)
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
        host.write(b'AT+QIOPEN=1,0,"TCP","198.51.100.7",9100,0,2\r')
        assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
        conn = server.wait_connection(timeout=10)
        host.write(b"one")
        assert host.read_until(b"one") == b"one"            # echoed back through the pty
        close_and_wait(host, emulator, port)
        deadline = time.monotonic() + 10
        counter = data_counter(port.modem)
        before = emulator.run(lambda: counter.received)
        conn.send(b"lost while closed")
        while emulator.run(lambda: counter.received) < before + 17:
            assert time.monotonic() < deadline, "the server's bytes never came"
            time.sleep(0.01)
        host = Host(port.path)
        emulator.run(port.port.look_for_host)
        try:
            host.write(b"two")
            assert conn.wait_received(6, timeout=10) == b"onetwo"
            got = host.read_until(b"two")
            assert got == b"two", got                        # nothing of the lost bytes
            assert emulator.run(lambda: port.modem.interpreter.mode.name) == "ONLINE"
        finally:
            host.close()


def test_cli_uart_flag(tmp_path):
    """`modem-emulator --uart`: a close at a data prompt is not seen."""
    proc = start("--profile", "ec2x", "--uart", "--state-dir", str(tmp_path / "s"))
    try:
        path = first_line(proc)
        host = Host(path)
        host.at("ATE0")
        host.write(b'AT+QFUPL="UFS:cli.txt",4\r')
        assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
        host.write(b"wx")
        time.sleep(0.3)                        # (the emulator reads them; then the close)
        host.close()
        time.sleep(0.3)                        # past the emulator's 50 ms look for a host
        host = Host(path)
        host.write(b"yz")
        assert host.read_until(OK).startswith(b"\r\n+QFUPL: 4,")
        host.close()
    finally:
        assert stop(proc) == 0
