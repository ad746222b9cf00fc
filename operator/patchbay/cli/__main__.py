"""`python -m patchbay.cli`: the same as the `patchbay` command."""

import sys

from patchbay.cli.main import main

sys.exit(main())
