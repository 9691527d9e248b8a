"""Config: the typed schema of `conf/` (`schema.py`), the checks run before anything heavy (`checks.py`) and the
config a run really uses (`run_config.py`)."""

from sidestep.config.checks import checked_train_config, typed, validate
from sidestep.config.containers import as_container, flatten
from sidestep.config.data_sources import SyntheticConfig
from sidestep.config.parts import OPTIMIZER_SCHEMAS, ModelConfig
from sidestep.config.registry import register_schemas
from sidestep.config.run_config import settled_config
from sidestep.config.schema import LATENT_FPS, TrainConfig

__all__ = ["LATENT_FPS", "OPTIMIZER_SCHEMAS", "ModelConfig", "SyntheticConfig", "TrainConfig",
           "as_container", "checked_train_config", "flatten", "register_schemas", "settled_config", "typed", "validate"]
