"""``python -m qa_scale``: the ``qa-scale`` console script."""

import sys

from .cli.app import main

sys.exit(main())
