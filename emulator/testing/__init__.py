"""Test support shared by tests/, bench/ and (later) a pytest plugin; needs the `test` extra
(pyserial, trustme), which the emulator itself never imports.

  host.py           Host: pyserial on the pty, as host software talks to a module
  engine_client.py  ClientDriver: a tls_engine session on a TCP socket, no emulator
  peers/            the TLS peers: TlsServer, OpenSslServer/Client, Pki, the ClientHello
                    parser, UdpDropRelay, MbedtlsServer (see peers/__init__.py)
"""
