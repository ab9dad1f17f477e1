"""The only code that imports torch, transformers, peft, trl, datasets: the worker and its
callback and watchdog, the evaluation worker, the demo model, data loading, library validation.
Runs in worker processes; the rest imports it only inside the functions that need it.
"""
