"""Runs and evaluations as processes: launching (launcher, evaluate_launch), the supervisor, the
queue and the concurrency limit, stop/resume/retry (lifecycle), machine sampling (sysmon).
Light: no torch; it starts the training side in subprocesses.
"""
