"""The AT command line, sans-IO: bytes from the host -> lexer -> parser -> handler
table -> framed answers.  interpreter.py runs it in one of the modes of mode.py
(command, data prompt, pending answer, online data); data_phase.py fills a data
prompt; framing.py is the only place that turns response values into bytes.
A new command is a handler in emulator/commands/."""
