#!/usr/bin/env bash
# Mutation testing of the training maths (not part of CI): are the tests strong enough that a one-line change
# to a formula fails them?
#
# mutmut (3.x) rewrites one expression at a time in
#   step      training/flow_matching.py             timesteps, CFG dropout, x_t, r, target, mask, Min-SNR weight
#   schedules training/lr_schedules.py              warm-up and decay of every learning-rate schedule
#   export    adapters/lora.py, adapters/targets.py  per-module alpha / rank in ComfyUI's file, module names
#   encoder   preprocessing/encoding.py             tiled VAE encoding (encode_latents)
# and runs, for each mutant, only the tests that reach the changed function, from the test files named in
# pyproject.toml's [tool.mutmut] (in-process tests only). Every mutant should be killed or be equivalent; inspect a
# survivor with `.venv/bin/mutmut show NAME`, then kill it with a test or explain it. Last run (452 mutants):
# 435 killed, 17 equivalent -- a different but fixed SeedSequence per process (3), `<` vs `<=` against a
# continuous draw, `.to(device)` dropped (CPU-only tests, 3), `return_dict` of a diffusers call (3: `[0]` of its
# output object is the same tensor), `total_steps` of the constant schedule (2), `shape[+1]` of a [2, S] tensor,
# the tile core size (any size gives the same latents), a keymap suffix cut by length, `.to(weight.dtype)` and
# the DiT builder's default dtype where everything is float32 already.
#
#   bash scripts/mutation_test.sh                  # all four areas: 34 min on 2 cores shared with 3 other jobs
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
  [export]="sidestep.adapters.lora.* sidestep.adapters.targets.x_original_module_name__*
            sidestep.adapters.targets.x_original_targets__*"
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
.venv/bin/mutmut results | grep -v ": not checked" || echo "none"
