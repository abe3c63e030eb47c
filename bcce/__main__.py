import sys

from bcce.cli import entry_point

sys.exit(entry_point())
