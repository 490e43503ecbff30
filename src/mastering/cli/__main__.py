"""``python -m mastering.cli``: the same as the ``mastering`` console script."""

import sys

from mastering.cli.main import main

sys.exit(main())
