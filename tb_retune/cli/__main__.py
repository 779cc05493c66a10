"""``python -m tb_retune.cli``: the same as the ``tb-retune`` command."""

from __future__ import annotations

import sys

from tb_retune.cli import main

if __name__ == "__main__":
    sys.exit(main())
