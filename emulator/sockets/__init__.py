"""A modem's sockets (SSL and plain TCP/UDP), below the AT commands and above the TLS engine.

    service.py     SocketService (what both services share); ssl_service(modem): contexts,
                   sockets, last error (AT+QIGETERROR, one store), session cache
    ssl_socket.py  one socket: its transition table (INITIAL/OPENING/CONNECTED/CLOSING), its
                   session (TLS, or plain), buffers
    plain_session.py  PlainSession: the TLS session's interface without TLS (TCP, UDP datagrams)
    tcpip.py       tcpip_service(modem): AT+QIOPEN sockets and listeners, one id pool with SSL
    delivery.py    access modes as strategies: buffer, direct push, online (transparent)
    dialects.py    module families (quectel, onemo): URC wording, option catalogue, context defaults
    context.py     AT+QSSLCFG options (OPTIONS) and how a context becomes tls_engine settings
"""
