#!/usr/bin/env bash
# One-time set-up: a virtual environment in .venv with Side-Step, its studio (python -m sidestep.studio), its test
# tools and the CPU build of torch pinned in constraints.txt, and the headless Chromium the report and studio tests
# open pages in, and librosa's compiled kernels. GPU users: see the README ("Installing on a GPU machine").
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x .venv/bin/python ]] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev,studio]"
# The browser: Debian's chromium when it is missing and we may install it, else Playwright's own build.
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null
  else
    .venv/bin/python -m playwright install chromium
  fi
fi
# librosa's beat tracker and chroma are compiled by numba on first use and cached: once here, not in a first analysis
.venv/bin/python scripts/compile_kernels.py
