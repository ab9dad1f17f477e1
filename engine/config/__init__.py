"""Experiment files: the one schema (each key's type, default, range and choices: SCHEMA, DEFAULTS,
CHOICES; the `launch:` keys and ACCELERATE_PRESETS too), extends, --set, validation, diff.
Light: the CLI and the TUI read it. Library validation is training/libcheck.
"""
