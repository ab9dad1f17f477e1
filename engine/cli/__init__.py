"""The `labtui` command line: parsing (cli), the commands (runs, lifecycle_cli, eval_cli), their shared
helpers (cli_base) and progress display (follow). labtui.main hands it the dashboard.
"""
