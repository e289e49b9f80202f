"""AT&V on the EC2x: the current settings, one per line, in the order and the format of the
"AT&V Response" table of Quectel's LTE Standard AT commands manuals (&C &D &F &W E Q V X Z,
then S0 S3 S4 S5 S6 S7 S8 S10).  The values are the port's own: what ATE/ATQ/ATV/ATX,
AT&C/AT&D and ATSn set, what AT&W saves and ATZ / AT&F / a restart bring back."""
from __future__ import annotations

OK = b"\r\nOK\r\n"


def shown(**changed) -> bytes:
    values = {"&C": 1, "&D": 2, "&F": 0, "&W": 0, "E": 1, "Q": 0, "V": 1, "X": 4, "Z": 0,
              "S0": 0, "S3": 13, "S4": 10, "S5": 8, "S6": 2, "S7": 0, "S8": 2, "S10": 15}
    values.update({k.replace("amp_", "&"): v for k, v in changed.items()})
    return b"\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in values.items()) + OK


def test_factory_settings_are_the_manuals_table(open_modem):
    ec2x, _ = open_modem("ec2x", echo=True)
    assert ec2x.at("AT&V") == b"AT&V\r" + shown()           # (echo on: E: 1)
    assert ec2x.at("ATE0") == b"ATE0\r" + OK
    assert ec2x.at("AT&V") == shown(E=0)
    assert ec2x.at("AT&V0") == shown(E=0)                    # the one profile there is
    assert ec2x.at("at&v") == shown(E=0)


def test_it_shows_what_the_host_set(ec2x):
    assert ec2x.at("ATX1;&C0;&D1;S0=3;S7=30;S10=20;S8=5;S6=4") == OK
    assert ec2x.at("AT&V") == shown(E=0, X=1, amp_C=0, amp_D=1, S0=3, S7=30, S10=20, S8=5, S6=4)
    assert ec2x.at("ATX") == OK                              # (no digit: 0)
    assert ec2x.at("AT&V").count(b"\r\nX: 0\r\n") == 1
    # ATQ1: the result code goes, the lines stay; ATV0: the lines as V.250 info text, a 0
    ec2x.write(b"ATQ1\r")
    assert ec2x.quiet_for(0.2) == b""
    ec2x.write(b"AT&V\r")
    assert ec2x.read_until(b"S10: 20\r\n") == b"\r\n&C: 0\r\n&D: 1\r\n&F: 0\r\n&W: 0\r\nE: 0\r\nQ: 1\r\n" \
        b"V: 1\r\nX: 0\r\nZ: 0\r\nS0: 3\r\nS3: 13\r\nS4: 10\r\nS5: 8\r\nS6: 4\r\nS7: 30\r\nS8: 5\r\nS10: 20\r\n"
    assert ec2x.quiet_for(0.2) == b""
    ec2x.write(b"ATQ0V0\r")
    assert ec2x.read_until(b"0\r") == b"0\r"
    ec2x.write(b"AT&V\r")
    got = ec2x.read_until(b"S10: 20\r\n0\r")
    assert got.startswith(b"&C: 0\r\n&D: 1\r\n") and b"\nV: 0\r\n" in got, got


def test_bad_forms_are_error(ec2x):
    for line in ("AT&V1", "AT&V?", "AT&V=0"):
        assert ec2x.at(line).endswith(b"\r\nERROR\r\n"), line
    assert ec2x.at("AT&V=?") == OK                           # (as every basic command's test form)
    assert ec2x.at("ATX5").endswith(b"\r\nERROR\r\n")
    assert b"\r\nX: 4\r\n" in ec2x.at("AT&V")                # (a refused ATX5 changed nothing)


def test_atw_saves_x_atz_restores_it_atf_and_a_restart_show_their_set(open_modem, tmp_path):
    state = tmp_path / "state"
    host, _ = open_modem("ec2x", state_dir=state)
    assert host.at("ATX2;S7=40;&W") == OK
    assert host.at("ATX3;S7=1") == OK
    assert host.at("ATZ") == OK
    assert host.at("AT&V") == shown(E=0, X=2, S7=40)        # the saved set
    assert host.at("AT&F") == OK
    assert host.at("ATE0") == b"ATE0\r" + OK
    assert host.at("AT&V") == shown(E=0)                     # the factory set
    host.close()
    again, _ = open_modem("ec2x", state_dir=state)           # a restart on the same state dir
    assert again.at("AT&V") == shown(E=0, X=2, S7=40)       # (AT&W saved ATE0 too)


def test_a_settings_file_from_before_atx_was_saved_loads_quietly(open_modem, tmp_path, caplog):
    import json
    state = tmp_path / "state"
    host, _ = open_modem("ec2x", state_dir=state)
    assert host.at("ATE0;S7=9;&W") == OK
    host.close()
    saved = json.loads((state / "settings.json").read_text())
    assert saved["x"] == 4
    del saved["x"]
    (state / "settings.json").write_text(json.dumps(saved))
    again, _ = open_modem("ec2x", state_dir=state)
    assert again.at("AT&V") == shown(E=0, S7=9)
    assert "key x" not in caplog.text


def test_the_ml302_has_no_at_v(ml302):
    assert ml302.at("AT&V").endswith(b"\r\nERROR\r\n")
