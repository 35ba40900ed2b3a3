"""Studies that train and evaluate many runs: the MVTec AD reproduction table (reproduce) beside the
published numbers (reference_numbers).

May import: every stage (core .. training). Never deployment, teaching or the CLI.
"""
