"""The run directory, the contract between the worker and every reader: its files and records
(store: Run, Workspace, atomic JSON, JSONL, the metrics index; records: the JSON files' typed records),
the alerts it holds (alerts), and how run data is spelled for a terminal (fmt). Imports nothing else of labtui.
"""
