"""Statistics (stats: Wilson, McNemar, Cohen's h, paired differences, checked against scipy) and
evaluations on disk (evalstore: eval rows, the headline eval, predictions, columns, the one compare).
"""
