#!/usr/bin/env bash
# One-time set-up: a virtual environment in .venv with Side-Step, its test tools and the CPU build of torch
# pinned in constraints.txt. GPU users: see the README ("Installing on a GPU machine").
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x .venv/bin/python ]] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
