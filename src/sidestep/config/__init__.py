"""Config: the typed schema of `conf/` (`schema.py`), the checks run before anything heavy (`checks.py`) and the
config a run really uses (`resolve.py`)."""

from sidestep.config.checks import prepare, typed, validate
from sidestep.config.containers import as_container, flatten
from sidestep.config.parts import OPTIMIZER_SCHEMAS, ModelConfig, SyntheticConfig
from sidestep.config.registry import register_schemas
from sidestep.config.resolve import resolve, resolve_run
from sidestep.config.schema import LATENT_FPS, TrainConfig

__all__ = ["LATENT_FPS", "OPTIMIZER_SCHEMAS", "ModelConfig", "SyntheticConfig", "TrainConfig",
           "as_container", "flatten", "prepare", "register_schemas", "resolve", "resolve_run", "typed", "validate"]
