"""The core over a real pty, talked to with pyserial as host software does."""
from __future__ import annotations

import os
import re
import select
import time

import pytest

from emulator.storage.checksum import xor16
from emulator.testing.host import Host


def test_startup_commands_ec2x(ec2x):
    expected = {
        "AT": b"\r\nOK\r\n",
        "ATI": b"\r\nQuectel\r\nEC25\r\nRevision: EC25EFAR06A06M4G\r\n\r\nOK\r\n",
        "AT+CGMI": b"\r\nQuectel\r\n\r\nOK\r\n",
        "AT+CGMM": b"\r\nEC25\r\n\r\nOK\r\n",
        "AT+CGMR": b"\r\nEC25EFAR06A06M4G\r\n\r\nOK\r\n",
        "AT+CGSN": b"\r\n867698041234567\r\n\r\nOK\r\n",
        "AT+GSN": b"\r\n867698041234567\r\n\r\nOK\r\n",
        "AT+CIMI": b"\r\n460011234567890\r\n\r\nOK\r\n",
        "AT+QCCID": b"\r\n+QCCID: 89860119841234567890\r\n\r\nOK\r\n",
        "AT+CPIN?": b"\r\n+CPIN: READY\r\n\r\nOK\r\n",
        "AT+CSQ": b"\r\n+CSQ: 24,99\r\n\r\nOK\r\n",
        "AT+CREG?": b"\r\n+CREG: 0,1\r\n\r\nOK\r\n",
        "AT+CGREG?": b"\r\n+CGREG: 0,1\r\n\r\nOK\r\n",
        "AT+CEREG?": b"\r\n+CEREG: 0,1\r\n\r\nOK\r\n",
        "AT+COPS?": b'\r\n+COPS: 0,0,"CHN-UNICOM",7\r\n\r\nOK\r\n',
        "AT+CFUN?": b"\r\n+CFUN: 1\r\n\r\nOK\r\n",
        "AT+IPR?": b"\r\n+IPR: 115200\r\n\r\nOK\r\n",
        "AT+IFC?": b"\r\n+IFC: 0,0\r\n\r\nOK\r\n",
        "AT+CMEE?": b"\r\n+CMEE: 1\r\n\r\nOK\r\n",
        "AT&D2": b"\r\nOK\r\n",
        "ATS4?": b"\r\n010\r\n\r\nOK\r\n",
        "AT+CCID": b"\r\nERROR\r\n",          # the ML302's command, not the EC25's
    }
    for line, answer in expected.items():
        assert ec2x.at(line) == answer, line


def test_startup_commands_ml302(ml302):
    assert ml302.at("AT+CGMM") == b"\r\nML302\r\n\r\nOK\r\n"
    assert ml302.at("AT+CCID") == b"\r\n+CCID: 898604A1192090123456\r\n\r\nOK\r\n"
    assert ml302.at("AT+QCCID") == b"\r\nERROR\r\n"


def test_settings_persist(ec2x):
    assert ec2x.at("AT+IPR=921600") == b"\r\nOK\r\n"
    assert ec2x.at("AT+IPR?") == b"\r\n+IPR: 921600\r\n\r\nOK\r\n"
    assert ec2x.at("AT+IPR=12345") == b"\r\nERROR\r\n"
    assert ec2x.at("AT+IFC=2,2") == b"\r\nOK\r\n"
    assert ec2x.at("AT+IFC?") == b"\r\n+IFC: 2,2\r\n\r\nOK\r\n"
    assert ec2x.at("AT+CREG=2") == b"\r\nOK\r\n"
    assert ec2x.at("AT+CREG?") == b'\r\n+CREG: 2,1,"D5D5","8A21B03",7\r\n\r\nOK\r\n'


def test_saved_settings_survive_restart(open_modem, tmp_path):
    state = tmp_path / "persist"
    host, _ = open_modem("ec2x", state_dir=state)
    assert host.at("AT+IPR=921600;&W") == b"\r\nOK\r\n"
    host2, _ = open_modem("ec2x", state_dir=state, echo=True)
    # ATE0 (sent by open_modem before AT&W) was saved too: no echo after the restart
    assert host2.at("AT+IPR?") == b"\r\n+IPR: 921600\r\n\r\nOK\r\n"


def test_clock_runs_on_from_value_set(ec2x):
    assert ec2x.at('AT+CCLK="30/01/02,03:04:05+32"') == b"\r\nOK\r\n"
    answer = ec2x.at("AT+CCLK?")
    m = re.fullmatch(rb'\r\n\+CCLK: "30/01/02,03:04:(\d\d)\+32"\r\n\r\nOK\r\n', answer)
    assert m and 5 <= int(m.group(1)) <= 15, answer
    assert ec2x.at('AT+CCLK="30/13/02,03:04:05+32"') == b"\r\n+CME ERROR: 50\r\n"
    assert ec2x.at("AT+CCLK=30/01/02") == b"\r\n+CME ERROR: 50\r\n"


def test_cfun(ec2x):
    assert ec2x.at("AT+QIACT=1") == b"\r\nOK\r\n"
    assert ec2x.at("AT+CFUN=0") == b"\r\nOK\r\n"
    assert ec2x.at("AT+QIACT?") == b"\r\nOK\r\n"        # radio off took the PDP context down
    assert ec2x.at("AT+CSQ") == b"\r\n+CSQ: 99,99\r\n\r\nOK\r\n"
    assert ec2x.at("AT+QIACT=1") == b"\r\nERROR\r\n"
    assert ec2x.at("AT+CFUN=1") == b"\r\nOK\r\n"
    assert ec2x.at("AT+CFUN=7") == b"\r\n+CME ERROR: 50\r\n"
    assert ec2x.at("AT+CFUN=1,1") == b"\r\nOK\r\n"
    assert ec2x.read_until(b"+QIND: PB DONE\r\n", timeout=5).startswith(b"\r\nRDY\r\n")


def test_ec2x_pdp_example_verbatim(ec2x):
    """EC2x SSL note §3.1 (the OCR's `"",",1` restored to `"","",1`)."""
    assert ec2x.at('AT+QICSGP=1,1,"UNINET","","",1') == b"\r\nOK\r\n"
    assert ec2x.at("AT+QIACT=1") == b"\r\nOK\r\n"
    assert ec2x.at("AT+QIACT?") == b'\r\n+QIACT: 1,1,1,"10.7.157.1"\r\n\r\nOK\r\n'
    assert ec2x.at("AT+QIDEACT=1") == b"\r\nOK\r\n"
    assert ec2x.at("AT+QIACT?") == b"\r\nOK\r\n"


def test_ec2x_pdp_details(ec2x):
    assert ec2x.at("AT+QICSGP=?") == b"\r\n+QICSGP: (1-16),(1-3),<APN>,<username>,<password>,(0-3)\r\n\r\nOK\r\n"
    assert ec2x.at('AT+QICSGP=1,1,"UNINET","","",1') == b"\r\nOK\r\n"
    assert ec2x.at("AT+QICSGP=1") == b'\r\n+QICSGP: 1,"UNINET","","",1\r\n\r\nOK\r\n'
    assert ec2x.at("AT+QICSGP=17") == b"\r\nERROR\r\n"
    assert ec2x.at("AT+QIACT=1;+QIACT=2") == b"\r\nOK\r\n"
    assert ec2x.at("AT+QIACT=1") == b"\r\nERROR\r\n"          # already active
    assert ec2x.at("AT+QIACT?") == (b'\r\n+QIACT: 1,1,1,"10.7.157.1"\r\n'
                                    b'+QIACT: 2,1,1,"10.7.157.2"\r\n\r\nOK\r\n')
    assert ec2x.at("AT+QIACT=0") == b"\r\nERROR\r\n"


def test_ml302_pdp_example_verbatim(ml302):
    """ML302 manual §3, first two exchanges."""
    assert ml302.at('AT+CGDCONT=1,"IP","CMNET"') == b"\r\nOK\r\n"
    assert ml302.at("AT+CGACT=1,1") == b"\r\n+CGACT: 1, 1, 10.127.79.43\r\n\r\nOK\r\n"
    assert ml302.at("AT+CGACT?") == b"\r\n+CGACT: 1,1\r\n\r\nOK\r\n"
    assert ml302.at("AT+CGACT=0,1") == b"\r\nOK\r\n"
    assert ml302.at("AT+CGACT?") == b"\r\n+CGACT: 1,0\r\n\r\nOK\r\n"


def test_echo_numeric_and_concatenation(open_modem):
    host, _ = open_modem("ec2x", echo=True)
    assert host.at("AT") == b"AT\r\r\nOK\r\n"
    assert host.at("ATE0") == b"ATE0\r\r\nOK\r\n"
    assert host.at("AT+CMEE=2;+CSQ") == b"\r\n+CSQ: 24,99\r\n\r\nOK\r\n"
    host.write(b"ATV0\r")
    assert host.read_until(b"0\r") == b"0\r"
    host.write(b"AT+CSQ\r")
    assert host.read_until(b"0\r") == b"+CSQ: 24,99\r\n0\r"
    host.write(b"AT+BOGUS\r")
    assert host.read_until(b"4\r") == b"4\r"
    assert host.at("ATV1") == b"\r\nOK\r\n"


def test_repeat_last_command(ec2x):
    assert ec2x.at("AT+CGMM") == b"\r\nEC25\r\n\r\nOK\r\n"
    ec2x.write(b"A/")
    assert ec2x.read_until(b"OK\r\n") == b"\r\nEC25\r\n\r\nOK\r\n"


def test_close_and_reopen_device(open_modem):
    host, port = open_modem("ec2x")
    for _ in range(5):
        host.close()
        host = Host(port.path)
        assert host.at("AT+CSQ") == b"\r\n+CSQ: 24,99\r\n\r\nOK\r\n"
    host.close()


def test_a_urc_right_after_the_host_reopens_the_port_is_delivered(emulator, open_modem):
    """The pty only shows a host's open by the end of POLLHUP, which the modem looked for
    every 50 ms: output written in that gap (a URC due just after a reopen) was dropped as
    if nobody were there."""
    host, port = open_modem("ec2x")
    for i in range(5):
        host.close()
        time.sleep(0.2)                    # the modem has seen the hang-up
        host = Host(port.path)
        assert emulator.control("urc", text=f"+TEST: {i}")["ok"]
        assert host.read_until(f"+TEST: {i}\r\n".encode(), timeout=3) == f"\r\n+TEST: {i}\r\n".encode()
    host.close()


def test_garbage_and_overlong_line(ec2x):
    ec2x.write(bytes(range(256)) * 4 + b"\r")
    ec2x.write(b"AT+CGMI\r")                  # (a marker: what the garbage got is answered before it)
    ec2x.read_until(b"\r\nQuectel\r\n\r\nOK\r\n")
    ec2x.quiet_for(0.3)
    assert ec2x.at("AT" + "X" * 3000) == b"\r\nERROR\r\n"
    assert ec2x.at("AT") == b"\r\nOK\r\n"
    assert ec2x.at(b"AT+CSQ\xff\xfe") == b"\r\nERROR\r\n"
    assert ec2x.at("AT") == b"\r\nOK\r\n"


@pytest.mark.parametrize("line", ['AT+QICSGP=1,1,"UNINET', "AT+QIACT=abc", "AT+QIACT=99999999999999999",
                                  "AT+CMEE=3", "AT+QIACT=1,2,3", "AT+IPR=-1", "ATE7", "AT&", "AT+"])
def test_bad_parameters_answer_error(ec2x, line):
    assert ec2x.at(line) in (b"\r\nERROR\r\n", b"\r\n+CME ERROR: 50\r\n")
    assert ec2x.at("AT") == b"\r\nOK\r\n"


def test_host_hangup_in_a_data_prompt_leaves_command_state_for_the_next_host(open_modem):
    host, port = open_modem("ec2x")
    host.write(b'AT+QFUPL="half.bin",100,60\r')
    host.read_until(b"\r\nCONNECT\r\n")
    host.write(b"ab")
    host.close()                                   # gone in the middle of the upload
    time.sleep(0.3)                                # a pty master cannot see a close+reopen in one instant
    host = Host(port.path)
    assert host.at("AT") == b"\r\nOK\r\n"          # command state, not file data
    assert host.at("AT+QFLST") == b"\r\nOK\r\n"    # nothing half-written was stored
    host.close()


def test_output_for_a_host_that_left_is_not_delivered_to_the_next(open_modem):
    host, port = open_modem("ec2x")
    host.write(b"AT+CGMM\r")
    time.sleep(0.1)
    host.close()                                   # never reads the answer
    time.sleep(0.3)
    # A raw open (pyserial would flush stale input itself): only the new answer arrives.
    fd = os.open(port.path, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(fd, b"AT+CGMI\r")
        got = b""
        deadline = time.monotonic() + 5
        while not got.endswith(b"OK\r\n") and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                got += os.read(fd, 4096)
        assert got == b"\r\nQuectel\r\n\r\nOK\r\n"
    finally:
        os.close(fd)


def test_crlf_line_endings_do_not_leak_into_data(ec2x):
    """Hosts that end lines with CR LF: the LF belongs to the command line."""
    data = b"\nhello\r\n"
    ec2x.write(f'AT+QFUPL="crlf.bin",{len(data)}\r\n'.encode())
    ec2x.read_until(b"\r\nCONNECT\r\n")
    ec2x.write(data)
    assert ec2x.read_until(b"OK\r\n") == f"\r\n+QFUPL: {len(data)},{xor16(data):x}\r\n\r\nOK\r\n".encode()
    ec2x.write(b'AT+QFDWL="crlf.bin"\r\n')
    assert ec2x.read_until(b"OK\r\n").startswith(b"\r\nCONNECT\r\n" + data + b"\r\n+QFDWL:")
