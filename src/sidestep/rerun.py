"""`python -m sidestep.rerun RUN_DIR [overrides...]`: run a past run again, optionally changed.

The run is recomposed from today's `conf/` with the overrides it was started with (`RUN/.hydra/overrides.yaml`)
plus the new ones, so group choices such as `optimizer=prodigy` work. First the recomposition without the new
overrides is compared with the run's saved config: if `conf/` has changed since, the rerun is refused with the
keys that differ (`--config-path RUN/.hydra --config-name config` still reruns the saved values exactly). A run
started with `--config-dir DIR` (a wizard recipe written with `--out DIR`) is recomposed with DIR again.
"""

import sys
from pathlib import Path
from typing import Dict, List

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import sidestep.conf
from sidestep.config import as_container, flatten, register_schemas, settled_config
from sidestep.config.data_sources import data_schema
from sidestep.config.overrides import check_overrides
from sidestep.config.renamed_keys import renamed_overrides
from sidestep.config.saved import load_saved, plain_select, read_plain
from sidestep.config.trust import take_allow_flags, vet_override
from sidestep.errors import SidestepError
from sidestep.ui.console import exit_on_user_error
from sidestep.ui.handover import become
from sidestep.ui.help import answer_help, usage_and_about

PATH_KEYS = ("model.checkpoint_dir",)  # and the data source's own (`paths`)
RESUME_KEYS = ("resume_from", "resume.strict")  # a rerun starts afresh and trains the whole run
VOLATILE_KEYS = ("run.name",)  # its default carries the start time: a rerun is a new run with a new name
SETTLED_FROM_DATA = ("sample.duration",)  # null in conf/: the run settles it from its songs, and the rerun will again


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def saved_overrides(run_dir: Path) -> List[str]:
    """The run's own overrides, with paths pinned to the absolute values it used and its run dir dropped."""
    hydra_dir = run_dir / ".hydra"
    if not (hydra_dir / "overrides.yaml").is_file() or not (hydra_dir / "config.yaml").is_file():
        raise SidestepError(f"{run_dir}: not a Side-Step run dir (no .hydra/overrides.yaml and config.yaml)")
    saved = load_saved(hydra_dir / "config.yaml")
    pinned = []
    overrides = read_plain(hydra_dir / "overrides.yaml")  # in today's names (`lora.rank=` of an older run)
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise SidestepError(f"{hydra_dir / 'overrides.yaml'}: not a list of key=value overrides")
    for override in overrides:
        key = override_key(override)
        if not (key.startswith("hydra.") or key in RESUME_KEYS):
            vet_override(override, str(hydra_dir / "overrides.yaml"))
        if key.startswith("hydra.") or key in RESUME_KEYS:  # a rerun starts afresh and trains the whole run
            continue
        paths = PATH_KEYS + tuple(f"data.{k}" for k in data_schema(saved.data).paths(saved.data))
        if key in paths and OmegaConf.select(saved, key) is not None:
            override = f"{key}={OmegaConf.select(saved, key)}"
        pinned.append(override)
    return pinned


def config_dirs(run_dir: Path) -> List[str]:
    """The `--config-dir` folders the run was started with, from Hydra's record of its config sources."""
    record = run_dir / ".hydra" / "hydra.yaml"
    sources = plain_select(read_plain(record), "hydra.runtime.config_sources") if record.is_file() else None
    return [str(s["path"]) for s in sources if isinstance(s, dict) and s.get("provider") == "command-line"
            and s.get("schema") == "file"] if isinstance(sources, list) else []


def drift(run_dir: Path, overrides: List[str]) -> Dict[str, tuple]:
    """{key: (saved, recomposed)} for every value today's conf/ (and the run's config dirs) would set differently."""
    dirs = config_dirs(run_dir)
    search = [f"hydra.searchpath=[{','.join(repr('file://' + d) for d in dirs)}]"] if dirs else []
    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        cfg = settled_config(compose(config_name="train", overrides=overrides + search))[0]
    now = flatten(as_container(cfg))
    saved = flatten(OmegaConf.to_container(load_saved(run_dir / ".hydra" / "config.yaml")))
    keys = sorted((set(now) | set(saved)) - set(RESUME_KEYS) - set(VOLATILE_KEYS))
    return {k: (saved.get(k), now.get(k)) for k in keys
            if saved.get(k) != now.get(k) and not (k in SETTLED_FROM_DATA and now.get(k) is None)}


def main(argv: List[str]) -> None:
    answer_help(argv, usage_and_about("python -m sidestep.rerun RUN_DIR [overrides...]", __doc__))
    register_schemas()
    with exit_on_user_error():
        argv = take_allow_flags(argv)
    if not argv or argv[0].startswith("-"):
        print("usage: python -m sidestep.rerun RUN_DIR [--allow-target NAME ...] [overrides...]", file=sys.stderr)
        sys.exit(2)
    with exit_on_user_error():
        run_dir = Path(argv[0]).resolve()
        old = saved_overrides(run_dir)
        changed = drift(run_dir, old)
        if changed:
            lines = [f"{k}: run had {a!r}, conf/ now gives {b!r}" for k, (a, b) in changed.items()]
            raise SidestepError(f"conf/ has changed since {run_dir} ran; for its exact values use "
                                f"--config-path {run_dir / '.hydra'} --config-name config\n  " + "\n  ".join(lines))
    new = renamed_overrides(argv[1:])
    with exit_on_user_error():  # `adapter.rank=16` on an OFT run: one line, as train says it
        check_overrides([*(o for o in old if override_key(o) == "adapter"), *new], Path(sidestep.conf.__file__).parent)
    replaced = {override_key(o) for o in new}
    dirs = [arg for d in config_dirs(run_dir) for arg in ("--config-dir", d)]
    # `python -m sidestep.train` takes over this process: only a Hydra run of the app gives the run dir and its
    # `${now:}` pattern, `.hydra/`, `train.log`, the callbacks and `-m` (its Compose API gives only the config)
    become(["-m", "sidestep.train", *dirs, *[o for o in old if override_key(o) not in replaced], *new])


if __name__ == "__main__":
    main(sys.argv[1:])
