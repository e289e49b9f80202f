"""Control API operations in a trace: each done op that changes something is a "control"
record (op, args; the "state" query is not), `trace show` lists it, and a replay -- which
does not repeat it -- names the recording's control operations beside its first difference,
so the user knows to give them as a --scenario (which then replays it).  A scenario's own
steps stay "scenario" records, not "control" ones as well."""
from __future__ import annotations

from emulator.tools.trace import show_main
from tests.e2e import replay_support as rs

OK = b"\r\nOK\r\n"
URC = '+QIND: "FOTA","START"'


def test_a_control_urc_is_recorded_shown_and_named_by_the_replay(tmp_path, emulator, open_modem, capsys):
    path = tmp_path / "field.trace"
    host, _ = open_modem("ec2x", trace=str(path))
    assert host.at("AT+CMEE=2") == OK
    assert emulator.control("state")["ok"]
    assert emulator.control("urc", text=URC) == {"ok": True}
    assert host.read_until(URC.encode() + b"\r\n") == b"\r\n" + URC.encode() + b"\r\n"
    assert emulator.control("urc", text=7) == {"ok": False, "error": "urc: 'text' must be a string, not 7"}
    assert host.at("AT+CSQ") == b"\r\n+CSQ: 24,99\r\n" + OK
    rs.flush(emulator)
    controls = [r for r in rs.records(path) if r["kind"] == "control"]
    assert [(r["op"], r["args"]) for r in controls] == [("urc", {"text": URC})]   # (not state, not the refused one)
    capsys.readouterr()
    assert show_main([str(path)]) == 0
    shown = [line for line in capsys.readouterr().out.splitlines() if " control " in line]
    assert len(shown) == 1 and shown[0].endswith(' control urc {"text": "+QIND: \\"FOTA\\",\\"START\\""}'), shown
    code, out = rs.replay(capsys, path)
    assert code == 1, out
    assert "(the recording had control operations a replay does not repeat -- urc at +" in out, out
    assert "give them as a --scenario" in out, out
    # the same as a scenario step (after the AT+CMEE=2 answer): replays, and no hint
    scenario = tmp_path / "urc.toml"
    scenario.write_text(f"[[step]]\nafter = {{ command = \"+CMEE\" }}\nop = \"urc\"\ntext = '{URC}'\n")
    code, out = rs.replay(capsys, path, "--scenario", str(scenario))
    assert code == 0 and "no difference" in out and "control operations" not in out, out


def test_a_scenario_step_is_a_scenario_record_only(tmp_path, emulator, open_modem):
    path = tmp_path / "s.trace"
    host, _ = open_modem("ec2x", trace=str(path))
    emulator.run_scenario({"step": [{"after": {"command": "+CMEE"}, "op": "urc", "text": URC}]})
    assert host.at("AT+CMEE=2") == OK
    assert host.read_until(URC.encode() + b"\r\n").endswith(URC.encode() + b"\r\n")
    rs.flush(emulator)
    kinds = [r["kind"] for r in rs.records(path) if r["kind"] in ("control", "scenario")]
    assert kinds == ["scenario"]
