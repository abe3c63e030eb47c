import sys

from bcce.cli import main

sys.exit(main())
