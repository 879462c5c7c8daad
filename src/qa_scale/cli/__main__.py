"""``python -m qa_scale.cli``: the ``qa-scale`` console script."""

import sys

from .app import main

sys.exit(main())
