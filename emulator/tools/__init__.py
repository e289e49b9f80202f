"""Programs around the emulator: the command line, the demo peer and its set-up."""
