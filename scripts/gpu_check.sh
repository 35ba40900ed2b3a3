#!/bin/bash
# Everything a GPU changes, checked in one run of at most 10 minutes; prints a markdown table and
# writes it to OUT/gpu_check.md (default outputs/gpu_check). See docs/gpu.md.
#
#   scripts/gpu_check.sh                         # on a GPU machine (cuda)
#   scripts/gpu_check.sh --device cuda:1         # another GPU
#   scripts/gpu_check.sh --device cpu --tiny     # the same checks on the CPU at tiny sizes (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec timeout "${GPU_CHECK_TIMEOUT:-600}" "$PY" scripts/gpu_check.py "$@"
