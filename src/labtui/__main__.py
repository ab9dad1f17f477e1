"""`python -m labtui`: the `labtui` command."""

from labtui.main import main

raise SystemExit(main())
