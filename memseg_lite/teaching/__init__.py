"""Helpers for the notebooks: exercise self-checks (exercises, and the per-chapter checks in the
``checks`` package), auto-grading of students' notebooks (grading), the interactive anomaly explorer
(widgets) and workbook figures (plotting).

May import: every stage (core .. training). Never deployment, experiments or the CLI.
"""
