"""labtui.tui: the Textual app (see README.md, "Architecture")."""

if __name__ != "labtui.tui":  # a checkout's folder found through the current directory
    raise ImportError(f"import labtui.tui, not {__name__}: the tui/ folder installs as labtui.tui "
                      "(pip install -e . in the checkout)")
