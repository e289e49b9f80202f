"""A modem's SSL sockets, below the AT commands and above the TLS engine.

    service.py     ssl_service(modem): contexts, sockets, last error, session cache (one factory)
    ssl_socket.py  one socket: its transition table (INITIAL/OPENING/CONNECTED/CLOSING), TLS, buffers
    delivery.py    access modes as strategies: buffer, direct push, online (transparent)
    dialects.py    module families (quectel, onemo): URC wording, option catalogue, context defaults
    context.py     AT+QSSLCFG options (OPTIONS) and how a context becomes tls_engine settings
"""
