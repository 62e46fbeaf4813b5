"""``python -m facelab ...``: the ``facelab`` command (:mod:`facelab.cli`), for an environment without its script."""
import sys

from .cli import main

sys.exit(main())
