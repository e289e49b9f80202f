import sys

from emulator.tools.cli import main

sys.exit(main())
