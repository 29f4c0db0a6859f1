"""`python -m confusion_cli.bench`: see the package docstring."""

from . import main

raise SystemExit(main())
