"""Fixes from an independent code review (each test fails without its fix)."""
from __future__ import annotations

import logging

from emulator.sockets.tcpip import tcpip_service
from emulator.testing.peers import TcpServer
from tests.e2e.socket_support import TCP_HOST, TCP_PORT, qiopen

OK = b"\r\nOK\r\n"


def test_a_slow_commands_work_that_fails_still_gets_its_answer(emulator, ec2x_on, caplog):
    """The control API's "slow" on AT+QISENDEX: the send's work runs at once and only its
    answer waits.  That work ran outside the interpreter's guard: had it raised, the exception
    left the pty read (logged as 'modem failed on input') and SEND OK never came -- the host
    waits for ever.  It is now guarded like every command's `then`: logged, answer written."""
    host, port = ec2x_on
    with TcpServer("sink") as server:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
        qiopen(host, 0)
        assert emulator.control("slow", command="+QISENDEX", ms=100)["ok"]

        def broken(*_args) -> None:
            raise RuntimeError("transmit failed")
        emulator.run(lambda: setattr(tcpip_service(port.modem).sockets[0], "transmit_soon", broken))
        host.write(b'AT+QISENDEX=0,"41"\r')
        emulator.wait_received(port, host.written)
        emulator.advance(port, 0.2)
        assert host.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
        assert host.at("AT") == OK
    assert any("work after the answer of AT+QISENDEX" in r.getMessage() and r.exc_info
               for r in caplog.records)
    assert not any("modem failed" in r.getMessage() for r in caplog.records)


def test_a_refused_net_request_changes_nothing_not_even_the_seed(emulator, open_modem):
    """A control "net" request with a bad key is an error; it used to reseed the loss
    generator before finding the key wrong."""
    from emulator.io.network import net_faults
    _, port = open_modem("ec2x")
    assert emulator.control("net", seed=7)["ok"]
    expected = emulator.run(lambda: net_faults(port.modem).random.random())
    assert emulator.control("net", seed=7)["ok"]
    assert not emulator.control("net", seed=99, lattency_ms=300)["ok"]
    assert emulator.run(lambda: net_faults(port.modem).random.random()) == expected


def test_a_refused_qiopen_says_why_in_the_log(emulator, ec2x_on, caplog):
    """AT+QIOPEN answered OK then +QIOPEN: <id>,561/563: the reason is in the log (it was
    dropped outside transparent mode)."""
    host, _ = ec2x_on
    caplog.set_level(logging.INFO)
    assert host.at('AT+QIOPEN=2,0,"TCP","a.example",80,0,0') == OK
    assert host.seen(b"+QIOPEN: 0,561") == b"+QIOPEN: 0,561"
    assert any("PDP context 2 is not active" in r.getMessage() for r in caplog.records)
