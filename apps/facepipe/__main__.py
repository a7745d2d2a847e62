"""`python -m facepipe` is the `facepipe` command."""

import sys

from facepipe.cli import main

sys.exit(main())
