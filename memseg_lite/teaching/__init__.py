"""Helpers for the notebooks: exercise self-checks (exercises, and the per-chapter checks in the
``checks`` package), auto-grading of students' notebooks with the hidden tests (grading), the student and solutions
editions generated from ``instructor/source`` (editions), the student zip (handout), the
interactive anomaly explorer (widgets) and workbook figures (plotting).

May import: every stage (core .. training). Never deployment, experiments or the CLI.
"""
