"""`openssl s_server` as a peer where Python's ssl module has no server side (DTLS,
PSK) or no control (renegotiation: s_server renegotiates when it reads "r" on stdin)."""
from __future__ import annotations

import socket
import subprocess
import time


class OpensslServer:
    def __init__(self, *args: str, dtls: bool = False) -> None:
        kind = socket.SOCK_DGRAM if dtls else socket.SOCK_STREAM
        probe = socket.socket(socket.AF_INET, kind)
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        # TCP: one extra accept for the readiness probe below.
        accepts = "1" if dtls else "2"
        self.proc = subprocess.Popen(
            ["openssl", "s_server", "-accept", f"127.0.0.1:{self.port}", "-naccept", accepts,
             "-cipher", "ALL:@SECLEVEL=0", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if dtls:
            time.sleep(0.3)  # nothing to probe a UDP server with; it binds within ms
        else:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                    break
                except OSError:
                    time.sleep(0.02)

    def type(self, line: bytes) -> None:
        self.proc.stdin.write(line)
        self.proc.stdin.flush()

    def stop(self) -> bytes:
        """Kill it and return everything it printed."""
        time.sleep(0.2)  # let it print what it just received
        self.proc.kill()
        out, _ = self.proc.communicate()
        return out
