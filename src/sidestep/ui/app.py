"""Running a Hydra entry point so that everything a user can get wrong ends in one plain line.

Hydra prints its own errors as a block with a hint about HYDRA_FULL_ERROR; here Hydra is asked to raise instead
(unless the user set HYDRA_FULL_ERROR=1, who then gets everything), and the error becomes one line: a config or
override problem, a folder that cannot be written, or the failed jobs of a sweep.
"""

import contextlib
import os
import re
import sys
from pathlib import Path
from typing import Callable, Iterator, Optional

from hydra.errors import HydraException, OverrideParseException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

import sidestep.conf
from sidestep.config.overrides import check_overrides
from sidestep.config.parts import knobs_of
from sidestep.config.renamed_keys import renamed_overrides
from sidestep.config.schema import CHOSEN_BY_TARGET
from sidestep.config.trust import take_allow_flags
from sidestep.errors import ConfigError, SidestepError, first_line, plain
from sidestep.sweep_outcome import WRITE_ERRNOS, FailedJobs, JobFailed, SweepEnded, describe, failed_jobs, sweep_failed
from sidestep.ui.console import exit_on_user_error


def run_app(app: Callable[[], object], check_schema: bool = False) -> None:
    """Call a `@hydra.main` function; `check_schema` first checks the overrides against the training schema."""
    full_errors = os.environ.get("HYDRA_FULL_ERROR") == "1"
    with _hydra_raises(), exit_on_user_error(log_file=False):  # a run's own errors end its log (sidestep.train)
        sys.argv = take_allow_flags(sys.argv)
        sys.argv = [sys.argv[0], *renamed_overrides(sys.argv[1:])]
        if check_schema:
            check_overrides(sys.argv[1:], Path(sidestep.conf.__file__).parent)
        try:
            app()
        except JobFailed as err:  # Hydra's basic sweeper raises the first failure once every job has run
            raise sweep_failed(err.run_dir.parent) from None
        except SweepEnded as ended:  # a sweeper that went on past failures, once it is done
            raise ended.failure from None
        except OverrideParseException as err:
            if full_errors:
                raise
            raise ConfigError(f"{err.override}: cannot parse this override ({first_line(err)}); quote values with "
                              "brackets or spaces, e.g. 'adapter.target_modules=[q_proj,v_proj]'") from None
        except (HydraException, OmegaConfBaseException) as err:
            if full_errors:
                raise
            raise ConfigError(composition_error(err)) from None
        except OSError as err:  # Hydra itself could not write the run folder
            if err.errno not in WRITE_ERRNOS or full_errors:
                raise
            raise SidestepError(describe(err)) from None
        except Exception:  # a sweeper that gives up once its jobs failed (Optuna: "No trials are completed yet.")
            sweep = _sweep_with_failed_jobs()
            if sweep is None or full_errors:
                raise
            raise sweep_failed(sweep) from None


def _sweep_with_failed_jobs() -> Optional[Path]:
    """The folder of the sweep this command ran, when some of its jobs failed."""
    sweep = FailedJobs.started
    return sweep if sweep is not None and sweep.is_dir() and failed_jobs(sweep) else None


def composition_error(err: Exception) -> str:
    """Hydra's error as one line that names the key: its cause's key (Hydra raises a composition error inside the
    handler of OmegaConf's, so the cause is its context) and the config file it was in, or else its first line with
    the reason on the next one (`In 'scheduler/x': ConfigKeyError raised while composing config:` names nothing)."""
    cause = next((c for c in (err.__cause__, err.__context__) if isinstance(c, OmegaConfBaseException)), err)
    key = getattr(cause, "full_key", None)
    where = re.match(r"In '([^']+)':", str(err))
    if key:
        return (f"in {where.group(1)}: " if where and cause is not err else "") + f"{key}: {_reason(cause, key)}"
    lines = [line.strip() for line in plain(str(err)).splitlines() if line.strip()]
    return f"{lines[0][:-1]}: {lines[1]}" if len(lines) > 1 and lines[0].endswith(":") else first_line(err)


def _reason(cause: OmegaConfBaseException, key: str) -> str:
    """`data=synthetic has no dataset_dir; its knobs are ...` for a knob the chosen option of a group lacks (the option
    named by its schema), else OmegaConf's own first line."""
    group, _, leaf = key.partition(".")
    option = next((name for name, schema in CHOSEN_BY_TARGET.get(group, {}).items()
                   if schema is getattr(cause, "object_type", None)), None)
    if option is None or not isinstance(cause, (ConfigKeyError, ConfigAttributeError)) or "." in leaf:
        return first_line(cause)
    own = ", ".join(f"{group}.{k}" for k in knobs_of(CHOSEN_BY_TARGET[group][option]) if not k.startswith("_"))
    return f"{group}={option} has no {leaf}; its knobs are {own}"


@contextlib.contextmanager
def _hydra_raises() -> Iterator[None]:
    """Hydra raises its errors instead of printing them (HYDRA_FULL_ERROR=1), for the duration of the call."""
    before = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["HYDRA_FULL_ERROR"]
        else:
            os.environ["HYDRA_FULL_ERROR"] = before
