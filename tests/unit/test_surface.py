"""README's command surface is generated from the profiles: it must match them."""
import re

from emulator.at.registry import TABLE, refuses
from emulator.modem.profile import load_profile
from emulator.tools import surface


def test_readme_section_is_up_to_date():
    assert surface.main(["--check"]) == 0, "run: python -m emulator.tools.surface --write"


def test_every_command_of_every_profile_is_listed():
    text = surface.surface()
    for spec in ("ec2x", "ml302"):
        block = surface.profile_surface(spec)
        for name in load_profile(spec).data["commands"]:
            # the whole name: "+QISEND" must not be satisfied by "+QISENDEX"
            assert re.search(re.escape(f"`AT{name.upper()}") + r"(?![A-Z0-9])", block), (spec, name)
    assert text.startswith(surface.BEGIN) and text.endswith(surface.END)


def test_a_refusing_form_is_not_listed():
    """AT+QSSLSEND? answers ERROR on the EC2x (a form it lacks): not shown; the ML302's
    read form answers OK: shown."""
    assert refuses(TABLE.lookup("+QSSLSEND", "read", "quectel").func)
    assert "`AT+QSSLSEND?`" not in surface.profile_surface("ec2x")
    assert "`AT+QSSLSEND?`" in surface.profile_surface("ml302")
