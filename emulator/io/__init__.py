"""Where bytes enter and leave: the pty (transport), the network (routing layer),
and the event loop that runs every modem (app)."""
