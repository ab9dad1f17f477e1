"""labtui.engine: everything but the screen (see README.md, "Architecture")."""

if __name__ != "labtui.engine":  # a checkout's folder found through the current directory
    raise ImportError(f"import labtui.engine, not {__name__}: the engine/ folder installs as labtui.engine "
                      "(pip install -e . in the checkout)")
