"""Experiment files: the schema (defaults, types, ranges, choices), extends, --set, validation, diff.
Light: the CLI and the TUI read it. Library validation is training/libcheck.
"""
