"""to_tls_settings' memo (emulator/sockets/context.py): an open whose inputs are the last
open's gets the same TlsSettings object back (no rebuilding on the way to the TCP connect);
any input that differs -- the dialled name, an option, a file's bytes, the key password, the
suites a module may expand 0XFFFF to, the modem's clocks -- gives settings built from it."""
from __future__ import annotations

import pytest

from emulator.modem.profile import load_profile
from emulator.sockets.context import SetupError, SslContext, to_tls_settings


class Files(dict):
    """read_material over a dict, counting reads (a file is read by every open)."""

    def __init__(self, **files: bytes) -> None:
        super().__init__(files)
        self.reads = 0

    def read(self, path: str) -> bytes | None:
        self.reads += 1
        data = self.get(path)
        return None if data is None else bytes(data)       # a fresh object, as a real read


def clock():
    return None


def monotonic():
    return 0.0


PROFILE = load_profile("ec2x")


def settings(ctx: SslContext, files: Files, host: str = "a.example", **kw):
    args = dict(host=host, profile=PROFILE, read_material=files.read, clock=clock, monotonic=monotonic)
    args.update(kw)
    return to_tls_settings(ctx, **args)


def test_the_same_inputs_give_the_same_settings_object():
    ctx, files = SslContext(1), Files()
    first = settings(ctx, files)
    assert settings(ctx, files) is first
    assert first.server_name == "a.example"


@pytest.mark.parametrize("option, value, field, expected", [
    ("sslversion", 1, "ssl_version", 1),
    ("ciphersuite", (0xC02F,), "cipher_suites", (0xC02F,)),
    ("sni", 1, "sni", True),
    ("alpn", "h2,mqtt", "alpn", (b"h2", b"mqtt")),
    ("session_cache", 0, "session_cache", False),
    ("dtls", 1, "dtls", True),
    ("ignorelocaltime", 0, "ignore_local_time", False),
    ("psk", ("dev", "00ff"), "psk_key", b"\x00\xff"),
])
def test_an_option_changed_between_opens_is_in_the_next_settings(option, value, field, expected):
    ctx, files = SslContext(1), Files()
    before = settings(ctx, files)
    ctx[option] = value
    after = settings(ctx, files)
    assert after is not before
    assert getattr(after, field) == expected
    ctx.reset()
    assert getattr(settings(ctx, files), field) == getattr(before, field)


def test_another_name_gets_its_own_settings():
    ctx, files = SslContext(1), Files()
    a = settings(ctx, files, host="a.example")
    b = settings(ctx, files, host="b.example")
    assert (a.server_name, b.server_name) == ("a.example", "b.example")
    assert settings(ctx, files, host="b.example") is b


def test_a_file_replaced_between_opens_is_read_again_and_used():
    ctx = SslContext(1)
    ctx["seclevel"], ctx["cacert"] = 1, "UFS:ca.pem"
    files = Files(**{"UFS:ca.pem": b"CA ONE\n"})
    one = settings(ctx, files)
    again = settings(ctx, files)
    assert again is one and files.reads == 2        # read by every open, equal bytes: shared
    files["UFS:ca.pem"] = b"CA TWO\n"
    two = settings(ctx, files)
    assert two.ca_pem == b"CA TWO\n"
    del files["UFS:ca.pem"]
    with pytest.raises(SetupError):                 # gone: refused, never the old settings
        settings(ctx, files)


def test_the_client_pair_and_its_password_are_inputs():
    ctx = SslContext(1)
    ctx["seclevel"], ctx["cacert"] = 2, "UFS:ca.pem"
    ctx["clientcert"], ctx["clientkey"] = "UFS:cli.pem", "UFS:key.pem"
    files = Files(**{"UFS:ca.pem": b"CA\n", "UFS:cli.pem": b"CERT", "UFS:key.pem": b"KEY"})
    plain = settings(ctx, files)
    assert plain.client_key_password is None
    ctx.key_password = "secret"
    locked = settings(ctx, files)
    assert locked.client_key_password == b"secret"
    files["UFS:key.pem"] = b"OTHER KEY"
    assert settings(ctx, files).client_key_pem == b"OTHER KEY"


def test_the_ciphers_a_module_allows_and_the_clocks_are_inputs():
    ctx, files = SslContext(1), Files()
    table = tuple(int(x, 16) for x in PROFILE["ssl.cipher_suites"])
    full = settings(ctx, files)
    narrowed = settings(ctx, files, allow_ciphers=table[:2])
    assert (full.cipher_suites, narrowed.cipher_suites) == (table, table[:2])

    def other_clock():
        return None
    moved = settings(ctx, files, allow_ciphers=table[:2], clock=other_clock)
    assert moved is not narrowed and moved.clock is other_clock
    lines = []
    logged = settings(ctx, files, allow_ciphers=table[:2], clock=other_clock, keylog=lines.append)
    assert logged.keylog == lines.append and logged is not moved


def test_a_profile_is_an_input():
    ctx, files = SslContext(1), Files()
    ec2x = settings(ctx, files)
    ml302 = settings(ctx, files, profile=load_profile("ml302"))
    assert ml302 is not ec2x
    assert ml302.cipher_suites == tuple(int(x, 16) for x in load_profile("ml302")["ssl.cipher_suites"])


def test_a_value_the_host_cannot_have_sent_as_bytes_is_refused_every_time():
    ctx, files = SslContext(1), Files()
    ctx["psk"] = ("caf\u00e9\u20ac", "00")
    for _ in range(2):
        with pytest.raises(SetupError):
            settings(ctx, files)
