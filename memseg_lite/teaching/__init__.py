"""Helpers for the notebooks: exercise self-checks (exercises), the interactive anomaly explorer (widgets)
and workbook figures (plotting).

May import: every stage (core .. training). Never deployment, experiments or the CLI.
"""
