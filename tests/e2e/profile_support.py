"""The EC2x profile as text, and the load error of a copy with one edit (the tests that check a
profile table is validated when it loads)."""
from __future__ import annotations

import pytest

from emulator.modem.profile import PROFILE_DIR, ProfileError, load_profile

EC2X = (PROFILE_DIR / "ec2x.toml").read_text()


def load_error_of_edit(tmp_path, old: str, new: str) -> str:
    """The ProfileError message of ec2x.toml with its first `old` replaced by `new`, loaded as
    a user profile; its path prefix ("profile <path>: ") removed."""
    assert old in EC2X, old
    path = tmp_path / "user.toml"
    path.write_text(EC2X.replace(old, new, 1))
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    message = str(info.value)
    prefix = f"profile {path}: "
    assert message.startswith(prefix), message
    return message[len(prefix):]
