"""Command handlers, one module per area.  Importing this package registers
every handler in emulator.at.registry.TABLE; the profile decides which exist."""
from emulator.commands import basic, device, files, general, gnss, netutil, pdp, secstore, ssl_ec2x, ssl_ml302, status, tcpip  # noqa: F401
