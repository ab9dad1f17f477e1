"""`python -m labtui`: the `labtui` command."""

from labtui.engine.cli import main

raise SystemExit(main())
