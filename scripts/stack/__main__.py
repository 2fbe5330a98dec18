"""``python -m scripts.stack <command>``: see :mod:`scripts.stack.cli`."""

from scripts.stack.cli import main

raise SystemExit(main())
