"""An independent review of the 2026-12-05 changes on main (103d93c..722458c), each driven
through the pty (or the Router / scenario / replay API the change touched):

1. f55e3ab -- trace replay of an AT+QIOPEN "TCP" socket's connect waits for its recorded
   moment (ReplayPlainSession; the stand-in's header line now goes to plain TCP sockets too):
   a TCP client, a UDP socket and a TCP LISTENER's incoming connection in one trace replay; a
   transparent-mode TCP session; a server that sends a banner at once and closes (the header
   and data in one read), buffer and push mode; a connection the stand-in has no script for
   is named as a difference (exit 1), no hang.
2. 8822c59 + a4460fc -- a dialled name with its root's trailing dot is routed as the name:
   AT+QIOPEN and AT+QIDNSGIP of "name."; --config [routes] and --route given with the dot;
   "..", "a..", "." and ".a" are no names; IPv6 literals with brackets and a dot.
3. 89db7ef -- EC2x AT+QSSLCFG="clientkey",<ctx>,<path>[,<key_pwd>]: encrypted EC (SEC1 with
   Proc-Type, PKCS#8) and PKCS#8 PBES1-3DES RSA keys; a password with ',', ';' (in a ';'
   chain) and UTF-8 bytes, typed one byte at a time; two contexts sharing a key with
   different passwords (the engine's configuration cache); AT&F keeps it, AT+CFUN=1,1 forgets
   the setting; a refused write changes nothing; a profile without ssl.clientkey_password and
   the ML302 refuse a 4th parameter; the control API's state, the open's failure log and a
   replayed trace of such opens.
4. 722458c -- scenario steps whose op arguments the modem's own profile can never take refuse
   to start (an EC2x modem 0 and an ML302 modem 1 in one emulator).

Bugs found, all fixed since (each test says "Was a bug, fixed"): a refused clientkey line logs its password; a
trace that dialled "x" and "x." (one server) does not replay; a trace that dialled "[::1]"
does not replay; "::1." is routed as ::1; AT+QIDNSGIP resolves "x.." though its open is not
routed; a TCP connect the host abandoned does not replay; a scenario trigger's socket outside
the profile's range is not refused at start-up.

Every host name dialled is routed to 127.0.0.1 (the emulator fixture is offline).
"""
from __future__ import annotations

import logging
import re
import subprocess

import pytest

from emulator.io.network import Router
from emulator.testing.peers import TcpServer, TlsServer
from emulator.tools.scenario import ScenarioError
from tests.e2e import replay_support as rs
from tests.e2e.ssl_options_support import HOST, PORT, cfg, close, open_ssl, trust

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
ATTACH = 'AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1'


# -- helpers -------------------------------------------------------------------------------------
def _encrypted(key_pem: bytes, password: bytes, form: str = "pkcs8") -> bytes:
    """The key as an encrypted PEM: "pkcs8" (PBES2, BEGIN ENCRYPTED PRIVATE KEY),
    "traditional" (Proc-Type: 4,ENCRYPTED: RSA or EC), "pbes1" (PKCS#8 with the PKCS#12
    PBE-SHA1-3DES of `openssl pkcs8 -v1`, what older tool chains make)."""
    from cryptography.hazmat.primitives import serialization
    if form == "pbes1":
        out = subprocess.run(["openssl", "pkcs8", "-topk8", "-v1", "PBE-SHA1-3DES",
                              "-passout", "stdin"], input=password + b"\n" + key_pem,
                             capture_output=True, check=True, timeout=60).stdout
        assert out.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----"), out[:60]
        return out
    key = serialization.load_pem_private_key(key_pem, password=None)
    fmt = (serialization.PrivateFormat.TraditionalOpenSSL if form == "traditional"
           else serialization.PrivateFormat.PKCS8)
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.BestAvailableEncryption(password))


def _client_pair(modem, cert_pem: bytes, key_pem: bytes, ctx: int = 1) -> None:
    assert modem.upload("UFS:client.pem", cert_pem).endswith(b"OK\r\n")
    assert modem.upload("UFS:client.key", key_pem).endswith(b"OK\r\n")
    cfg(modem, "clientcert", ctx, '"UFS:client.pem"')


def _log_text(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


def _at_bytewise(host, line: bytes) -> bytes:
    """A command line written one byte at a time (a slow UART host); its answer."""
    for b in line + b"\r\n":
        host.write(bytes([b]))
    return host.read_until(re.compile(rb"\r\n(OK|ERROR|\+CME ERROR: \d+)\r\n"))


# =================================================================================================
# 3. "clientkey" with a key password (EC2x)
# =================================================================================================
@pytest.mark.parametrize("form,key_type", [("traditional", "ec"), ("pbes1", "rsa"), ("pkcs8", "ec")],
                         ids=["ec-sec1-proc-type", "rsa-pkcs8-pbes1-3des", "ec-pkcs8"])
def test_other_encrypted_key_forms_open_with_their_password(ec2x, net, pki, form, key_type):
    """Mbed TLS (the module's TLS) reads encrypted SEC1 EC keys and PKCS#8 PBES1 keys as well
    as the two forms the change's own test has: each opens with its password, 552 with none."""
    import trustme
    leaf = pki.client if key_type == "rsa" else pki.issue(
        "h6-client-ec", "ec-client.example", common_name="modem client ec", key_type=trustme.KeyType.ECDSA)
    _client_pair(ec2x, leaf.cert_pem, _encrypted(leaf.key_pem, b"k3y-h6", form))
    with TlsServer(pki.server, client_ca=pki.ca.cert_pem, require_client_cert=True) as server:
        net(server)
        trust(ec2x, 1, pki.ca.cert_pem, seclevel=2)
        cfg(ec2x, "clientkey", 1, '"UFS:client.key"')
        assert open_ssl(ec2x, 1) == 552
        cfg(ec2x, "clientkey", 1, '"UFS:client.key"', '"k3y-h6"')
        assert open_ssl(ec2x, 1) == 0
        assert "modem client" in server.wait_handshake().client_cert_subject
        close(ec2x)


def test_a_password_with_a_comma_a_semicolon_and_non_ascii_bytes_is_the_hosts_bytes(ec2x, net, pki):
    """The parameter is a quoted string: a comma, a ';' and spaces inside belong to it (also in
    a ';' chain), and a UTF-8 "ä" is the two bytes the host typed (the key was encrypted with
    those bytes).  Written one byte at a time."""
    password = "p,ä s;s".encode()
    _client_pair(ec2x, pki.client.cert_pem, _encrypted(pki.client.key_pem, password))
    with TlsServer(pki.server, client_ca=pki.ca.cert_pem, require_client_cert=True) as server:
        net(server)
        trust(ec2x, 1, pki.ca.cert_pem, seclevel=1)
        assert _at_bytewise(ec2x, b'AT+QSSLCFG="clientkey",1,"UFS:client.key","' + password
                            + b'";+QSSLCFG="seclevel",1,2') == OK
        assert ec2x.at('AT+QSSLCFG="clientkey",1') == b'\r\n+QSSLCFG: "clientkey",1,"UFS:client.key"\r\n\r\nOK\r\n'
        assert ec2x.at('AT+QSSLCFG="seclevel",1') == b'\r\n+QSSLCFG: "seclevel",1,2\r\n\r\nOK\r\n'
        assert open_ssl(ec2x, 1) == 0
        assert "modem client" in server.wait_handshake().client_cert_subject
        close(ec2x)
        # the same characters as latin-1 bytes are another password
        assert _at_bytewise(ec2x, b'AT+QSSLCFG="clientkey",1,"UFS:client.key","p,\xe4 s;s"') == OK
        assert open_ssl(ec2x, 1) == 552


def test_two_contexts_with_one_encrypted_key_and_different_passwords(ec2x, net, pki, caplog):
    """The engine caches a built configuration by its settings: context 2's wrong password
    must not reuse context 1's decrypted key, nor context 1's right one be spoiled by it.
    The open's failure is logged without either password."""
    caplog.set_level(logging.DEBUG)
    _client_pair(ec2x, pki.client.cert_pem, _encrypted(pki.client.key_pem, b"RightPw-h6"), ctx=1)
    cfg(ec2x, "clientcert", 2, '"UFS:client.pem"')
    with TlsServer(pki.server, client_ca=pki.ca.cert_pem, require_client_cert=True) as server:
        net(server)
        trust(ec2x, 1, pki.ca.cert_pem, seclevel=2)
        for option, value in [("seclevel", 2), ("cacert", '"UFS:ca.pem"'), ("session_cache", 0)]:
            cfg(ec2x, option, 2, value)
        cfg(ec2x, "clientkey", 1, '"UFS:client.key"', '"RightPw-h6"')
        cfg(ec2x, "clientkey", 2, '"UFS:client.key"', '"WrongPw-h6"')
        for ctx, want in [(1, 0), (2, 552), (1, 0), (2, 552)]:
            assert open_ssl(ec2x, ctx) == want, ctx
            if want == 0:
                close(ec2x)
        assert sum(1 for c in server.connections if c.handshake_done) == 2
    text = _log_text(caplog)
    assert "client key" in text                      # the failures were logged ...
    assert "RightPw-h6" not in text and "WrongPw-h6" not in text     # ... not the passwords


def test_at_and_f_keeps_the_key_password_as_it_keeps_the_path(ec2x, net, pki):
    """AT&F restores the V.250 settings; AT+QSSLCFG is not one of them (the path stays), so
    neither is its password: the encrypted key still opens."""
    _client_pair(ec2x, pki.client.cert_pem, _encrypted(pki.client.key_pem, b"keep-me"))
    with TlsServer(pki.server, client_ca=pki.ca.cert_pem, require_client_cert=True) as server:
        net(server)
        trust(ec2x, 1, pki.ca.cert_pem, seclevel=2)
        cfg(ec2x, "clientkey", 1, '"UFS:client.key"', '"keep-me"')
        assert ec2x.at("AT&F") == OK
        assert ec2x.at("ATE0").endswith(OK)          # (AT&F turned the echo back on)
        assert ec2x.at('AT+QSSLCFG="clientkey",1') == b'\r\n+QSSLCFG: "clientkey",1,"UFS:client.key"\r\n\r\nOK\r\n'
        assert open_ssl(ec2x, 1) == 0
        server.wait_handshake()
        close(ec2x)


def test_a_reboot_forgets_the_clientkey_with_its_password(ec2x, pki):
    """AT+CFUN=1,1: neither module saves AT+QSSLCFG; the path is back to its default."""
    before = ec2x.at('AT+QSSLCFG="clientkey",1')
    cfg(ec2x, "clientkey", 1, '"UFS:client.key"', '"gone"')
    assert ec2x.at("AT+CFUN=1,1") == OK
    ec2x.seen(b"RDY\r\n", 30)
    ec2x.at("ATE0")
    assert ec2x.at('AT+QSSLCFG="clientkey",1') == before
    assert b"UFS:client.key" not in before


def test_the_ml302_refuses_a_key_password(ml302):
    """The ML302 manual's AT+QSSLCFG has no <key_pwd>: a 4th parameter is ERROR and the
    path stays what it was."""
    before = ml302.at('AT+QSSLCFG="clientkey",0')
    assert ml302.at('AT+QSSLCFG="clientkey",0,"/userKey.pem","pwd"') == ERROR
    assert ml302.at('AT+QSSLCFG="clientkey",0') == before


def test_a_rejected_clientkey_write_leaves_the_password_as_it_was(ec2x, net, pki):
    """A write that is refused (five parameters, a 256-byte password) changes nothing: the
    right password set before still opens."""
    _client_pair(ec2x, pki.client.cert_pem, _encrypted(pki.client.key_pem, b"stays"))
    with TlsServer(pki.server, client_ca=pki.ca.cert_pem, require_client_cert=True) as server:
        net(server)
        trust(ec2x, 1, pki.ca.cert_pem, seclevel=2)
        cfg(ec2x, "clientkey", 1, '"UFS:client.key"', '"stays"')
        assert ec2x.at('AT+QSSLCFG="clientkey",1,"UFS:other.key","x",0') == ERROR
        assert ec2x.at('AT+QSSLCFG="clientkey",1,"UFS:other.key","' + "q" * 256 + '"') == ERROR
        assert open_ssl(ec2x, 1) == 0
        server.wait_handshake()
        close(ec2x)


def test_the_control_api_state_does_not_show_the_key_password(emulator, ec2x):
    cfg(ec2x, "clientkey", 1, '"UFS:client.key"', '"StateSecret77"')
    state = emulator.control("state")
    assert state["ok"], state
    assert "StateSecret77" not in repr(state)


# Was a bug, fixed: a refused AT+QSSLCFG="clientkey" line is logged with its <key_pwd> in clear
# (logsafe._SECRET_FORMS redacts only "psk")
def test_a_rejected_clientkey_line_does_not_log_its_password(ec2x, caplog):
    """docs/behaviour.md and emulator/logsafe.py: key material never reaches a log -- a
    refused "psk" line is logged with <redacted>.  A key password is key material (it
    unlocks the client key in UFS): a refused clientkey line must not show it either."""
    caplog.set_level(logging.INFO)
    assert ec2x.at('AT+QSSLCFG="clientkey",1,"UFS:client.key","TopSecretPw1",9') == ERROR
    assert ec2x.at('AT+QSSLCFG="clientkey",9,"UFS:client.key","TopSecretPw2"') == ERROR
    text = _log_text(caplog)
    assert "clientkey" in text                         # the refusals were logged
    assert "TopSecretPw1" not in text and "TopSecretPw2" not in text, text


# =================================================================================================
# 2. Routes and the root's trailing dot
# =================================================================================================
def test_odd_dotted_names_are_not_routed_as_another_name():
    """Only one trailing root dot goes: "a.example.." and ".." are no names, "." (the root
    alone) is not the empty name; a route given with the dot matches both spellings."""
    router = Router(["a.example:443=127.0.0.1:1001", "[::1]:443=127.0.0.1:1002"])
    assert router.lookup("a.example.", 443) == router.lookup("A.Example", 443) == ("127.0.0.1", 1001)
    for name in ("a.example..", "..", ".", ".a.example", "a.example.:443"):
        assert router.lookup(name, 443) is None, name
    assert router.lookup("[::1]", 443) == router.lookup("::1", 443) == ("127.0.0.1", 1002)
    assert router.lookup("[::1].", 443) is None


def test_a_tcp_open_of_a_name_with_a_trailing_dot_reaches_its_route(open_modem, emulator):
    """AT+QIOPEN (the TCP/IP side, not only AT+QSSLOPEN) of "tcp.example." reaches the route
    added as "tcp.example"; AT+QISTATE shows the host's own spelling's address."""
    with TcpServer(mode="echo") as server:
        emulator.router.add_map("tcp.example", 7001, "127.0.0.1", server.port)
        host, _ = open_modem("ec2x")
        assert host.at(ATTACH) == OK
        assert host.at('AT+QIOPEN=1,3,"TCP","TCP.Example.",7001,0,0') == OK
        assert host.read_until(b"+QIOPEN: 3,") + host.read_until(b"\r\n") == b"\r\n+QIOPEN: 3,0\r\n"
        rs.qisend(host, 3, b"dotted")
        assert host.read_until(b'"recv",3\r\n') == b'\r\n+QIURC: "recv",3\r\n'
        assert host.at("AT+QIRD=3,100") == b"\r\n+QIRD: 6\r\ndotted\r\n\r\nOK\r\n"
        assert host.at("AT+QICLOSE=3") == OK


def _two_opens_of_one_server(open_modem, emulator, tmp_path, second_name: str):
    """A trace: one TCP server dialled as "tcp.example" then as `second_name`, an echo on each."""
    path = tmp_path / "two-opens.trace"
    with TcpServer(mode="echo") as server:
        emulator.router.add_map("tcp.example", 7002, "127.0.0.1", server.port)
        host, _ = open_modem("ec2x", trace=str(path))
        assert host.at(ATTACH) == OK
        for cid, name, data in [(0, "tcp.example", b"first"), (1, second_name, b"second!")]:
            assert host.at(f'AT+QIOPEN=1,{cid},"TCP","{name}",7002,0,0') == OK
            assert host.read_until(b"+QIOPEN: %d," % cid) + host.read_until(b"\r\n") == b"\r\n+QIOPEN: %d,0\r\n" % cid
            rs.qisend(host, cid, data)
            assert host.read_until(b'"recv",%d\r\n' % cid) == b'\r\n+QIURC: "recv",%d\r\n' % cid
            assert host.at(f"AT+QIRD={cid},100") == b"\r\n+QIRD: %d\r\n%s\r\n\r\nOK\r\n" % (len(data), data)
            assert host.at(f"AT+QICLOSE={cid}") == OK
        emulator.stop()
    return path


def test_a_trace_that_dialled_one_name_twice_replays(open_modem, emulator, tmp_path, capsys):
    """The control for the next test: the same session with one spelling replays."""
    rs.replays(capsys, _two_opens_of_one_server(open_modem, emulator, tmp_path, "TCP.example"))


# Was a bug, fixed: replay makes one stand-in per recorded (host.lower(), port) but the router now
# keys 'x' and 'x.' alike: the 2nd add_map overwrites the 1st, the first open reaches the wrong
# stand-in
def test_a_trace_that_dialled_a_name_and_its_dotted_form_replays(open_modem, emulator, tmp_path, capsys):
    """One server, dialled as "tcp.example" and as "tcp.example." (the same host since
    8822c59): both opens reached it when recorded, so the replay has no difference."""
    rs.replays(capsys, _two_opens_of_one_server(open_modem, emulator, tmp_path, "tcp.example."))


# =================================================================================================
# 1. Replay: plain TCP sockets' connects at their recorded moment
# =================================================================================================
def test_tcp_udp_and_a_listeners_incoming_connection_in_one_trace_replay(open_modem, emulator, tmp_path, capsys):
    """The stand-in's header line now goes to every stream stand-in: a TCP client socket,
    a UDP socket (its datagram stand-in) and a connection a TCP LISTENER accepted (its
    stand-in is the client: no header) all replay without a difference."""
    import socket as _socket
    from emulator.testing.peers.plain import UdpEchoServer
    from tests.e2e.socket_support import free_port
    path = tmp_path / "mixed.trace"
    with TcpServer(mode="echo") as tcp, UdpEchoServer() as udp:
        emulator.router.add_map("tcp.example", 7003, "127.0.0.1", tcp.port)
        emulator.router.add_map("udp.example", 7004, "127.0.0.1", udp.port)
        host, port = open_modem("ec2x", trace=str(path))
        assert host.at(ATTACH) == OK
        assert host.at('AT+QIOPEN=1,0,"TCP","tcp.example",7003,0,0') == OK
        assert host.read_until(b"+QIOPEN: 0,") + host.read_until(b"\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
        assert host.at('AT+QIOPEN=1,1,"UDP","udp.example",7004,0,0') == OK
        assert host.read_until(b"+QIOPEN: 1,") + host.read_until(b"\r\n") == b"\r\n+QIOPEN: 1,0\r\n"
        lport = free_port()
        assert host.at(f'AT+QIOPEN=1,2,"TCP LISTENER","127.0.0.1",0,{lport},0') == OK
        assert host.read_until(b"+QIOPEN: 2,") + host.read_until(b"\r\n") == b"\r\n+QIOPEN: 2,0\r\n"
        rs.qisend(host, 0, b"tcp-data")
        assert host.read_until(b'"recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
        assert host.at("AT+QIRD=0,100") == b"\r\n+QIRD: 8\r\ntcp-data\r\n\r\nOK\r\n"
        rs.qisend(host, 1, b"udp-data")
        assert host.read_until(b'"recv",1\r\n') == b'\r\n+QIURC: "recv",1\r\n'
        assert host.at("AT+QIRD=1,100") == b"\r\n+QIRD: 8\r\nudp-data\r\n\r\nOK\r\n"
        client = _socket.create_connection(("127.0.0.1", lport), timeout=10)
        try:
            m = re.fullmatch(rb'\r\n\+QIURC: "incoming",(\d+),2,"[\d.]+",\d+\r\n',
                             host.read_until(re.compile(rb'"incoming",\d+,2,"[\d.]+",\d+\r\n')))
            assert m, "no incoming URC"
            inc = int(m.group(1))
            client.sendall(b"in-data")
            assert host.read_until(b'"recv",%d\r\n' % inc) == b'\r\n+QIURC: "recv",%d\r\n' % inc
            assert host.at(f"AT+QIRD={inc},100") == b"\r\n+QIRD: 7\r\nin-data\r\n\r\nOK\r\n"
        finally:
            client.close()
        assert host.read_until(b'"closed",%d\r\n' % inc) == b'\r\n+QIURC: "closed",%d\r\n' % inc
        assert host.at(f"AT+QICLOSE={inc}") == OK
        for cid in (0, 1, 2):
            assert host.at(f"AT+QICLOSE={cid}") == OK
        emulator.stop()
    rs.replays(capsys, path)


def test_a_tcp_connection_the_stand_in_has_no_script_for_is_a_difference(open_modem, emulator, tmp_path, capsys):
    """The trace edited so that its server had one connection where the host opens two: the
    stand-in has no script for the second (it aborts it, ReplayPlainSession sees the close
    before any header): the replay ends, exit 1, naming a difference -- no hang, no traceback."""
    path = _two_opens_of_one_server(open_modem, emulator, tmp_path, "tcp.example")
    rs.replays(capsys, path)
    cut = [r for r in rs.records(path) if r.get("socket") != 1]
    assert len(cut) < len(rs.records(path))
    edited = rs.save(tmp_path, "edited.trace", cut)
    code, out = rs.replay(capsys, edited, "--max-gap", "2")
    assert code == 1 and "first difference" in out, out


# =================================================================================================
# 4. Scenario steps checked against each modem's profile
# =================================================================================================
def _two_profiles(open_modem):
    open_modem("ec2x")
    open_modem("ml302")


@pytest.mark.parametrize("step,modem,ok", [
    ({"op": "send_fail", "socket": 7}, 0, True),              # EC2x: 0-11
    ({"op": "send_fail", "socket": 7}, 1, False),             # ML302: 0-5
    ({"op": "drop", "socket": 5, "how": "rst"}, 1, True),
    ({"op": "net", "latency_ms": 10, "socket": 6}, 1, False),
    ({"op": "slow", "command": "+QIOPEN", "ms": 10}, 0, True),
    ({"op": "slow", "command": "+QIOPEN", "ms": 10}, 1, False),  # the ML302 has no AT+QIOPEN
    ({"op": "pdp_deact", "cid": 16}, 0, True),
], ids=["ec2x-socket-7", "ml302-socket-7", "ml302-socket-5", "ml302-net-socket-6",
        "ec2x-slow-qiopen", "ml302-slow-qiopen", "ec2x-cid-16"])
def test_a_step_is_judged_by_its_own_modems_profile(emulator, open_modem, step, modem, ok):
    _two_profiles(open_modem)
    scenario = {"step": [{"at": 3600, "modem": modem, **step}]}
    if ok:
        run = emulator.run_scenario(scenario)
        emulator.run(run.cancel)
    else:
        with pytest.raises(ScenarioError, match=r"step 1: key (socket|command|cid)"):
            emulator.run_scenario(scenario)


def test_a_pdp_context_out_of_the_ml302s_range_is_refused(emulator, open_modem):
    _two_profiles(open_modem)
    with pytest.raises(ScenarioError, match=r"step 1: key cid"):
        emulator.run_scenario({"step": [{"at": 1, "modem": 1, "op": "pdp_deact", "cid": 200}]})


# Was a bug, fixed: a trigger's socket outside the modem's profile (ML302 socket 9, ids 0-5)
# starts: Scenario.check checks the op's socket but not the trigger's; the step can never fire
def test_a_trigger_socket_the_profile_does_not_have_is_refused(emulator, open_modem):
    """722458c: "a step that could never run is refused at start-up".  A `when` on the 9th
    ML302 socket's AT+QSSLSEND can never match (the ML302's <ssid> is 0-5)."""
    _two_profiles(open_modem)
    scenario = {"step": [{"when": {"command": "+QSSLSEND", "socket": 9}, "modem": 1,
                          "op": "dns_fail", "count": 1}]}
    with pytest.raises(ScenarioError, match=r"socket"):
        run = emulator.run_scenario(scenario)
        emulator.run(run.cancel)


# Was a bug, fixed: a TCP connect the host closed before it ended gets no stand-in in replay
# (scripts_of holds only SSL ones: 'not s.plain'): the replay's open is not routed, 565,
# AT+QISTATE differs
def test_a_tcp_connect_the_host_abandoned_replays(open_modem, emulator, tmp_path, capsys):
    """A slow network's connect (the control API's latency, on the modem's clock) that the
    host gives up with AT+QICLOSE before +QIOPEN: the recording's server saw a connection
    and no data; the replay's stand-in must hold it as the SSL one holds an abandoned
    handshake, so the replay's AT+QICLOSE meets the same opening socket."""
    path = tmp_path / "abandoned.trace"
    with TcpServer(mode="echo") as server:
        emulator.router.add_map("tcp.example", 7006, "127.0.0.1", server.port)
        host, port = open_modem("ec2x", trace=str(path), manual_time=True)
        advance = emulator.advancer(port, host)
        assert host.at(ATTACH) == OK
        assert emulator.control("net", latency_ms=500)["ok"]
        assert host.at('AT+QIOPEN=1,0,"TCP","tcp.example",7006,0,0') == OK
        assert re.fullmatch(rb'\r\n\+QISTATE: 0,"TCP","[\d.]+",7006,\d+,1,1,0,0,"usbmodem"\r\n\r\nOK\r\n',
                            host.at("AT+QISTATE=1,0")), "not opening"
        closed = host.at("AT+QICLOSE=0")
        assert closed.endswith(OK), closed
        advance(2.0)
        assert emulator.control("net", latency_ms=0)["ok"]
        assert host.at("AT+QISTATE=1,0") == OK
        emulator.stop()
    rs.replays(capsys, path)


def test_a_transparent_tcp_session_replays(open_modem, emulator, tmp_path, capsys):
    """AT+QIOPEN access mode 2: CONNECT comes once the connect is made (the stand-in's
    header), the data both ways, +++ and AT+QICLOSE."""
    path = tmp_path / "transparent.trace"
    with TcpServer(mode="echo") as server:
        emulator.router.add_map("tcp.example", 7007, "127.0.0.1", server.port)
        host, port = open_modem("ec2x", trace=str(path), manual_time=True)
        advance = emulator.advancer(port, host)
        assert host.at(ATTACH) == OK
        host.write('AT+QIOPEN=1,0,"TCP","tcp.example",7007,0,2\r\n')
        assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
        host.write(b"through")
        advance(0.2)                                    # (the transwaittm packing timer)
        assert host.read_until(b"through") == b"through"
        advance(1.5)
        for b in b"+++":
            host.write(bytes([b]))
        advance(1.5)
        assert host.read_until(b"OK\r\n") == OK
        assert host.at("AT+QICLOSE=0") == OK
        emulator.stop()
    rs.replays(capsys, path)


# Was a bug, fixed: '::1.' (no IPv6 literal, no host name) is routed as the IPv6 literal ::1
# (_route_key strips the dot after lookup's bracket strip): +QIOPEN: 0,0 and a made-up address in
# QISTATE
def test_an_ipv6_literal_with_a_trailing_dot_is_not_that_literal(open_modem, emulator):
    """A resolver takes "www.x." as "www.x", but "::1." is neither an address (inet_pton
    fails) nor a name (':' is no hostname character): it is not the route of [::1], and
    AT+QIOPEN of it fails its name lookup (+QIOPEN: 0,<err>, err != 0)."""
    with TcpServer(mode="echo") as server:
        emulator.router.add_map("::1", 7012, "127.0.0.1", server.port)
        host, _ = open_modem("ec2x")
        assert host.at(ATTACH) == OK
        assert host.at('AT+QIOPEN=1,0,"TCP","::1.",7012,0,0') == OK
        answer = host.read_until(b"+QIOPEN: 0,") + host.read_until(b"\r\n")
        assert re.fullmatch(rb"\r\n\+QIOPEN: 0,5\d\d\r\n", answer), answer
    assert Router(["[::1]:443=127.0.0.1:1002"]).lookup("::1.", 443) is None


def test_config_routes_and_route_options_take_the_trailing_dot(tmp_path):
    """--config's [routes] table and --route keep names as lookups see them (a4460fc)."""
    import argparse
    from emulator.tools.cli import add_router_options, load_config
    conf = tmp_path / "net.toml"
    conf.write_text('[routes]\n"Abs.Example.:443" = "127.0.0.1:9003"\n"plain.example" = "127.0.0.1"\n')
    router = Router()
    load_config(str(conf), router)
    add_router_options(argparse.Namespace(route=["cli.example.:8883=127.0.0.1:9004"], listen=[], dns=[], ping=[]),
                       router)
    assert router.lookup("abs.example", 443) == router.lookup("ABS.example.", 443) == ("127.0.0.1", 9003)
    assert router.lookup("plain.example.", 5) == ("127.0.0.1", 5)
    assert router.lookup("cli.example", 8883) == router.lookup("cli.example.", 8883) == ("127.0.0.1", 9004)
    assert router.lookup("abs.example..", 443) is None


def test_a_trace_of_an_open_with_an_encrypted_client_key_replays(open_modem, emulator, pki, tmp_path, capsys):
    """Seclevel 2 with an encrypted client key and its password (recorded against a server
    that requires the client certificate), then the same key written again without the
    password (552): the replay (placeholder files of the same sizes) answers alike."""
    path = tmp_path / "enckey.trace"
    with TlsServer(pki.server, client_ca=pki.ca.cert_pem, require_client_cert=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        host, _ = open_modem("ec2x", trace=str(path))
        assert host.at(ATTACH) == OK
        _client_pair(host, pki.client.cert_pem, _encrypted(pki.client.key_pem, b"replay-pw"))
        assert host.upload("UFS:ca.pem", pki.ca.cert_pem).endswith(b"OK\r\n")
        for option, value in [("seclevel", 2), ("cacert", '"UFS:ca.pem"'), ("session_cache", 0)]:
            cfg(host, option, 1, value)
        cfg(host, "clientkey", 1, '"UFS:client.key"', '"replay-pw"')
        assert open_ssl(host, 1) == 0
        server.wait_handshake()
        assert host.send_data(0, b"ping") == b"\r\nSEND OK\r\n"
        # the echo server's answer comes as a URC: take it before AT+QSSLCLOSE's answer
        host.read_until(b'+QSSLURC: "recv",0\r\n')
        close(host)
        cfg(host, "clientkey", 1, '"UFS:client.key"')
        assert open_ssl(host, 1) == 552
        emulator.stop()
    rs.replays(capsys, path)


def _banner_then_close(conn) -> None:
    conn.send(b"220 banner\r\n")
    conn.close()


@pytest.mark.parametrize("mode", [0, 1], ids=["buffer", "push"])
def test_a_tcp_server_that_speaks_at_once_and_closes_replays(open_modem, emulator, tmp_path, capsys, mode):
    """A banner right at the connect, then the server's FIN: the stand-in's header line and
    the banner may reach ReplayPlainSession in one read (the bytes after the header's line end
    are data); the "recv" (push: the data) and "closed" URCs replay in their order."""
    path = tmp_path / f"banner-{mode}.trace"
    with TcpServer(behave=_banner_then_close) as server:
        emulator.router.add_map("tcp.example", 7008, "127.0.0.1", server.port)
        host, _ = open_modem("ec2x", trace=str(path))
        assert host.at(ATTACH) == OK
        host.write(f'AT+QIOPEN=1,0,"TCP","tcp.example",7008,0,{mode}\r\n')
        assert host.read_until(b'"closed",0\r\n').endswith(b'\r\n+QIURC: "closed",0\r\n')
        if mode == 0:
            assert host.at("AT+QIRD=0,100") == b"\r\n+QIRD: 12\r\n220 banner\r\n\r\n\r\nOK\r\n"
        assert host.at("AT+QICLOSE=0") == OK
        emulator.stop()
    out = rs.records(path)
    assert any(r.get("kind") == "received" for r in out)
    rs.replays(capsys, path)


def test_a_profile_without_clientkey_password_refuses_the_fourth_parameter(open_modem, tmp_path):
    """ssl.clientkey_password absent or false (a module whose firmware is the note's): the
    4th parameter is ERROR, the 3-parameter form works."""
    from emulator.modem.profile import PROFILE_DIR
    text, n = re.subn(r"clientkey_password = true", "clientkey_password = false",
                      (PROFILE_DIR / "ec2x.toml").read_text(), count=1)
    assert n == 1
    (tmp_path / "nopwd.toml").write_text(text)
    host, _ = open_modem(str(tmp_path / "nopwd.toml"))
    assert host.at('AT+QSSLCFG="clientkey",1,"UFS:client.key","pwd"') == ERROR
    assert host.at('AT+QSSLCFG="clientkey",1,"UFS:client.key"') == OK
    assert host.at('AT+QSSLCFG="clientkey",1') == b'\r\n+QSSLCFG: "clientkey",1,"UFS:client.key"\r\n\r\nOK\r\n'


# Was a bug, fixed: a trace whose host dialled "[::1]" does not replay: replay's Router.add_map
# keeps the brackets in the route key, Router.lookup strips them: the replay's open is not routed
def test_a_trace_that_dialled_a_bracketed_ipv6_literal_replays(open_modem, emulator, tmp_path, capsys):
    """The host dials "[::1]" (routed by the test as ::1, which lookups of "[::1]" match);
    a4460fc: "add_map and --route keep names as lookups see them" -- the replay adds its
    stand-ins' routes with add_map under the names the trace recorded."""
    path = tmp_path / "v6.trace"
    with TcpServer(mode="echo") as server:
        emulator.router.add_map("::1", 7010, "127.0.0.1", server.port)
        host, _ = open_modem("ec2x", trace=str(path))
        assert host.at(ATTACH) == OK
        assert host.at('AT+QIOPEN=1,0,"TCP","[::1]",7010,0,0') == OK
        assert host.read_until(b"+QIOPEN: 0,") + host.read_until(b"\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
        rs.qisend(host, 0, b"v6")
        assert host.read_until(b'"recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
        assert host.at("AT+QIRD=0,100") == b"\r\n+QIRD: 2\r\nv6\r\n\r\nOK\r\n"
        assert host.at("AT+QICLOSE=0") == OK
        emulator.stop()
    rs.replays(capsys, path)


def test_add_map_and_route_of_a_bracketed_literal_agree_for_lookups():
    """--route "[::1]:443=..." is found by lookups of "[::1]" and "::1"."""
    router = Router(["[::1]:443=127.0.0.1:1003"])
    assert router.lookup("[::1]", 443) == router.lookup("::1", 443) == ("127.0.0.1", 1003)


def _dnsgip(host, name: str) -> bytes:
    """AT+QIDNSGIP's first URC line after its OK."""
    assert host.at(f'AT+QIDNSGIP=1,"{name}"') == OK
    return host.read_until(re.compile(rb'\+QIURC: "dnsgip",[^\r]*\r\n'), 20)


def test_qidnsgip_of_a_name_with_its_roots_dot_resolves_as_the_name(open_modem, emulator):
    emulator.router.add_map("dns.example", 7011, "127.0.0.1", 9)
    host, _ = open_modem("ec2x")
    assert host.at(ATTACH) == OK
    plain = _dnsgip(host, "dns.example")
    assert re.fullmatch(rb'\r\n\+QIURC: "dnsgip",0,1,\d+\r\n', plain), plain
    address = host.read_until(re.compile(rb'"dnsgip","[\d.]+"\r\n'), 20)
    assert _dnsgip(host, "DNS.example.") == plain
    assert host.read_until(re.compile(rb'"dnsgip","[\d.]+"\r\n'), 20) == address


# Was a bug, fixed: AT+QIDNSGIP resolves "dns.example.." (an empty label) as dns.example:
# Router.knows/_dns_key strip every trailing dot, while routes (_route_key) take it as no name
def test_qidnsgip_of_a_name_with_an_empty_label_fails_as_its_open_does(open_modem, emulator):
    """"dns.example.." is no name (an empty label): a resolver fails it, and the emulator's
    own route lookup (a4460fc) does not take it as dns.example -- its open is not routed.  So
    AT+QIDNSGIP must fail it too, as it fails "..": +QIURC: "dnsgip",<err> with err != 0."""
    emulator.router.add_map("dns.example", 7011, "127.0.0.1", 9)
    host, _ = open_modem("ec2x")
    assert host.at(ATTACH) == OK
    assert re.fullmatch(rb'\r\n\+QIURC: "dnsgip",5\d\d\r\n', _dnsgip(host, "..")), "'..' resolved"
    answer = _dnsgip(host, "dns.example..")
    assert re.fullmatch(rb'\r\n\+QIURC: "dnsgip",5\d\d\r\n', answer), answer
