"""Programs around the emulator: the command line, the demo peer and its set-up."""
import argparse


class OneLineParser(argparse.ArgumentParser):
    """argparse for the programs here: a refused argument is one line on stderr and exit 2
    (README "Command line"), as the emulator's own checks of values answer, not argparse's
    usage block followed by the error; --help still prints the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message}\n")


def shown_path(path) -> str:
    """A path as a one-line message shows it: a NUL byte as \\0, never raw."""
    return str(path).replace("\0", "\\0")
