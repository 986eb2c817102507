"""``python -m remotemedia``: the same as the ``remotemedia`` command."""

import sys

from remotemedia.cli.main import main

sys.exit(main())
