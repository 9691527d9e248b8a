#!/usr/bin/env bash
# Mutation testing of the training maths (not part of CI): are the tests strong enough that a one-line change
# to a formula fails them?
#
# mutmut (3.x) rewrites one expression at a time in
#   step      training/flow_matching.py             timesteps, CFG dropout, x_t, r, target, mask, Min-SNR weight
#   schedules training/lr_schedules.py              warm-up and decay of every learning-rate schedule
#   export    training/adapter_files.py, export.py  per-module alpha / rank in ComfyUI's file and the merged DiT
#   encoder   preprocessing/encoding.py             tiled VAE encoding (encode_latents)
# and runs, for each mutant, only the tests that reach the changed function, from the test files named in
# pyproject.toml's [tool.mutmut] (in-process tests only). Every mutant should be killed; the few that survive
# are equivalent (e.g. `max(1, n)` -> `max(2, n)` where n >= 2 always, or a default argument no caller omits):
# inspect them with `.venv/bin/mutmut show NAME` and either kill them with a test or explain them.
#
#   bash scripts/mutation_test.sh                  # all four areas: about 15-20 minutes on 2 busy cores
#   bash scripts/mutation_test.sh step schedules   # some of them
#   JOBS=4 bash scripts/mutation_test.sh           # more worker processes (default 2)
#
# mutmut keeps its copy of the sources and its results in mutants/ (git-ignored); results of unchanged
# functions are reused on the next run. `.venv/bin/mutmut results` lists the survivors again.
set -euo pipefail
cd "$(dirname "$0")/.."

.venv/bin/python -c "import mutmut" 2>/dev/null || .venv/bin/python -m pip install -q "mutmut>=3.8,<4"

declare -A AREAS=(
  [step]="sidestep.training.flow_matching.*"
  [schedules]="sidestep.training.lr_schedules.*"
  [export]="sidestep.training.adapter_files.x_module_scales__* sidestep.training.adapter_files.x__pattern_value__*
            sidestep.training.adapter_files.x__write_comfyui__* sidestep.training.adapter_files.x_merge_into__*
            sidestep.training.adapter_files.x_original_module_name__* sidestep.export.x_merge__*"
  [encoder]="sidestep.preprocessing.encoding.x_encode_latents__*"
)
chosen=("$@")
[[ ${#chosen[@]} -gt 0 ]] || chosen=(step schedules export encoder)
patterns=()
for area in "${chosen[@]}"; do
  [[ -n "${AREAS[$area]:-}" ]] || { echo "unknown area $area (choose from: ${!AREAS[*]})" >&2; exit 2; }
  read -r -a more <<< "$(echo ${AREAS[$area]})"
  patterns+=("${more[@]}")
done

start=$SECONDS
.venv/bin/mutmut run --max-children "${JOBS:-2}" "${patterns[@]}"
echo "mutation run took $(( (SECONDS - start) / 60 )) min"
echo "survivors (mutmut show NAME prints the change):"
.venv/bin/mutmut results
