"""Module families as data: the profile's ssl.dialect and ssl.options (emulator/sockets/
dialects.py), one factory for a modem's SSL state, and the EC2x cipher table's one
source.  A Quectel BG95/BG96-style module without DTLS, PSK and ALPN is one TOML file."""
from __future__ import annotations

import re

import pytest

from emulator.modem.profile import PROFILE_DIR, ProfileError, load_profile
from emulator.sockets.dialects import QUECTEL
from emulator.sockets.service import ssl_service
from tls_engine.ciphers import CIPHER_TABLE

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
BG95_OPTIONS = [o for o in QUECTEL.default_options if o not in ("dtls", "dtlsversion", "psk", "alpn")]


def profile_copy(tmp_path, edit, source: str = "ec2x"):
    path = tmp_path / f"{source}-copy.toml"
    path.write_text(edit((PROFILE_DIR / f"{source}.toml").read_text()))
    return path


def with_options(options: list[str]):
    listed = "options = [" + ", ".join(f'"{o}"' for o in options) + "]\n"
    return lambda text: re.sub(r"^options = \[.*?\]\n", listed, text, count=1, flags=re.M | re.S)


def test_a_bg95_style_profile_lists_and_takes_only_its_options(open_modem, tmp_path):
    host, _ = open_modem(str(profile_copy(tmp_path, with_options(BG95_OPTIONS))))
    test = host.at("AT+QSSLCFG=?")
    assert re.findall(rb'\+QSSLCFG: "(\w+)",\(0-5\),', test) == [o.encode() for o in BG95_OPTIONS]
    assert test.endswith(b"\r\nOK\r\n")
    assert host.at('AT+QSSLCFG="sni",0,1') == OK
    assert host.at('AT+QSSLCFG="sni",0') == b'\r\n+QSSLCFG: "sni",0,1\r\n\r\nOK\r\n'
    for line in ('AT+QSSLCFG="dtls",0,1', 'AT+QSSLCFG="dtls",0', 'AT+QSSLCFG="dtlsversion",0,1',
                 'AT+QSSLCFG="psk",0,"id","0102"', 'AT+QSSLCFG="alpn",0,"h2"'):
        assert host.at(line) == ERROR, line
        assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"
    assert host.at("AT+QSSLOPEN=?") == (b"\r\n+QSSLOPEN: (1-16),(0-5),(0-11),<serveraddr>,<server_port>,(0-2)"
                                        b"\r\n\r\nOK\r\n")


def test_the_built_in_profiles_name_their_family():
    ec2x, ml302 = load_profile("ec2x"), load_profile("ml302")
    assert ec2x["ssl.dialect"] == "quectel" and ec2x["ssl.options"] == list(QUECTEL.default_options)
    assert set(QUECTEL.options) - set(QUECTEL.default_options) == {"checkhost", "ignorecertchain"}
    assert ml302["ssl.dialect"] == "onemo"
    assert {ec2x.command_variant("+QSSLOPEN"), ml302.command_variant("+QSSLOPEN")} == {"quectel", "onemo"}


def test_the_ec2x_cipher_table_comes_from_the_tls_engine():
    assert load_profile("ec2x")["ssl.cipher_suites"] == [s.code for s in CIPHER_TABLE.values()]
    assert "cipher_suites" not in (PROFILE_DIR / "ec2x.toml").read_text().split("[ssl.errors]")[0].replace(
        "# cipher_suites", "")


@pytest.mark.parametrize("edit, message", [
    (with_options(["sslversion", "ignorertctime"]),
     "key ssl.options: 'ignorertctime' is not an AT+QSSLCFG option of dialect 'quectel'"),
    (with_options(["sni", "sni"]), "key ssl.options: an option is listed twice"),
    (lambda t: t.replace('dialect = "quectel"', 'dialect = "sierra"'),
     "key ssl.dialect: must be one of 'quectel', 'onemo', got 'sierra'"),
    (lambda t: t.replace('dialect = "quectel"', 'dialect = "onemo"'),
     "key ssl.options: 'cacertex' is not an AT+QSSLCFG option of dialect 'onemo'"),
])
def test_profile_ssl_keys_are_checked(tmp_path, edit, message):
    path = profile_copy(tmp_path, edit)
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    assert str(info.value).startswith(f"profile {path}: {message}"), info.value


def test_the_ssl_commands_variant_is_the_dialect(tmp_path):
    edit = with_options(["sslversion"])
    path = profile_copy(tmp_path, lambda t: edit(t).replace('dialect = "quectel"', 'dialect = "onemo"'))
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    assert str(info.value) == (f"profile {path}: key commands.\"+QSSLCFG\": variant 'quectel' but "
                               f"ssl.dialect is 'onemo' (they name the same family)")


def test_one_factory_whoever_asks_first(emulator, open_modem):
    """The ML302's context defaults (certificate slots, SNI on, no resumption) come with
    the modem's SSL state however it is first created."""
    host, port = open_modem("ml302")
    svc = emulator.run(ssl_service, port.modem)
    assert svc.dialect.name == "onemo" and svc.contexts[0]["sni"] == 1
    assert host.at('AT+QSSLCFG="ctxindex",0') == (
        b'\r\n+QSSLCFG: 0,4,0,0XFFFF,"/caCrt.pem","/clientCrt.pem","/privateKey.pem"\r\n\r\nOK\r\n')
    assert emulator.run(ssl_service, port.modem) is svc
