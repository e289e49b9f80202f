"""The AT command line: bytes from the host -> lexer -> parser -> handler table ->
framed answers (sans-IO).  A new command is a handler in emulator/commands/."""
