"""SSL dialects: what differs between module families beyond their AT handlers.

A profile names its family's dialect (`ssl.dialect`) and, within the dialect's
option catalogue, the AT+QSSLCFG options the module has (`ssl.options`); the
handlers (emulator/commands/ssl_ec2x.py for "quectel", ssl_ml302.py for "onemo")
are the profile's `[commands]` variants of the same names.

A new module family is a Dialect here (its URC wording, its option catalogue,
its context defaults), a handler module registered with `variant="<family>"`,
and a profile TOML.  A Quectel module with fewer options (BG95/BG96: no DTLS,
PSK, ALPN) is only a profile: `ssl.options` lists what it has.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from emulator.sockets.context import OPTIONS, default_values
from emulator.storage.secstore import SLOT_CA_CERT, SLOT_CLIENT_CERT, SLOT_CLIENT_KEY, SLOT_PATHS


@dataclass(frozen=True)
class Dialect:
    name: str
    # Every AT+QSSLCFG option the family knows, in the order its test form lists them;
    # a profile's ssl.options is a subset (default: `default_options`, else all of them).
    options: tuple[str, ...]
    # The options of a profile that lists none (a family's catalogue may hold options of
    # other members that its reference module does not have).
    default_options: tuple[str, ...] = ()
    # Options of a context whose default differs from the EC2x note's (OPTIONS).
    context_defaults: dict[str, object] = field(default_factory=dict)
    # Options without a context that are only stored and queried: name -> default.
    stored_globals: dict[str, int] = field(default_factory=dict)
    # URC wording ({id}: the socket's id; {code}: 0 or the error; {n}: pushed bytes).
    opened_urc: str = "+QSSLOPEN: {id},{code}"
    recv_urc: str = '+QSSLURC: "recv",{id}'
    push_urc: str = '+QSSLURC: "recv",{id},{n}'
    closed_urc: str = '+QSSLURC: "closed",{id}'

    @property
    def options_by_default(self) -> tuple[str, ...]:
        return self.default_options or self.options

    def context_values(self) -> dict[str, object]:
        return default_values(self.context_defaults)

    def opened(self, sock, code: int) -> str:
        return self.opened_urc.format(id=sock.client_id, code=code)

    def recv(self, sock) -> str:
        return self.recv_urc.format(id=sock.client_id)

    def push(self, sock, n: int) -> str:
        return self.push_urc.format(id=sock.client_id, n=n)

    def closed(self, sock) -> str:
        return self.closed_urc.format(id=sock.client_id)


# Quectel: every option of OPTIONS, the EC2x note's defaults; a profile without ssl.options
# has the EC2x's (all but the BG96/BG95 ones, which a BG96 profile lists).
BG96_ONLY_OPTIONS = ("checkhost", "ignorecertchain")
QUECTEL = Dialect(name="quectel", options=tuple(OPTIONS),
                  default_options=tuple(o for o in OPTIONS if o not in BG96_ONLY_OPTIONS))

# China Mobile OneMO ML302 (SSL AT manual): six options per context, three global ones
# ("ignorertctime" is every context's ignorelocaltime; "https" and "httpsctxi" are only
# stored). Certificates default to the AT+QSECWRITE slots, so seclevel 2 alone works.
# (In the order AT+QSSLCFG="ctxindex",<n> lists them.)
ONEMO_CONTEXT_OPTIONS = ("sslversion", "seclevel", "ciphersuite", "cacert", "clientcert", "clientkey")
ONEMO = Dialect(
    name="onemo",
    options=ONEMO_CONTEXT_OPTIONS + ("ignorertctime", "https", "httpsctxi"),
    context_defaults={"cacert": SLOT_PATHS[SLOT_CA_CERT], "clientcert": SLOT_PATHS[SLOT_CLIENT_CERT],
                      "clientkey": SLOT_PATHS[SLOT_CLIENT_KEY], "session_cache": 0, "sni": 1},
    stored_globals={"https": 0, "httpsctxi": 0},
    recv_urc='+QSSLURC: "recv",1,{id}',          # <cid> is reserved: always 1
    closed_urc='+QSSLURC: "close",{id}',
)

DIALECTS: dict[str, Dialect] = {d.name: d for d in (QUECTEL, ONEMO)}


def options_problem(dialect: str, options: list) -> str | None:
    """Why `options` cannot be a profile's ssl.options for `dialect` (None: it can)."""
    known = DIALECTS[dialect].options
    for name in options:
        if name not in known:
            return f"{name!r} is not an AT+QSSLCFG option of dialect {dialect!r} (known: {', '.join(known)})"
    if len(set(options)) != len(options):
        return "an option is listed twice"
    return None
