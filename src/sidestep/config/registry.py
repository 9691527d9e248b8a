"""What Hydra needs before it composes a Side-Step config: the schemas, Side-Step's resolvers, and config sources
that vet every file they read (`vetted_sources.py`)."""

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from sidestep.config.parts import AttentionConfig, DataConfig, ModelConfig, SchedulerConfig, TimestepsConfig
from sidestep.config.run_name import register_run_name_resolvers
from sidestep.config.schema import CHOSEN_BY_TARGET, AnalyzeConfig, PreprocessConfig, SampleConfig, TrainConfig
from sidestep.config.vetted_sources import use_vetted_sources
from sidestep.user_config import register_user_config_resolver


def register_schemas() -> None:
    """Make the schemas available to the YAML files: each extends `/schema/<group>/<name>@_here_`."""
    register_run_name_resolvers()
    register_user_config_resolver()
    use_vetted_sources()
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="preprocess_schema", node=PreprocessConfig)
    cs.store(name="sample_schema", node=SampleConfig)
    cs.store(name="analyze_schema", node=AnalyzeConfig)
    for group, schema in [("model", ModelConfig), ("scheduler", SchedulerConfig), ("attention", AttentionConfig),
                          ("timesteps", TimestepsConfig), ("data", DataConfig)]:
        cs.store(group=f"schema/{group}", name="base", node=schema)
    for group, schemas in CHOSEN_BY_TARGET.items():
        for name, schema in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=_open(schema) if group == "adapter" else schema)


def _open(schema: type) -> DictConfig:
    """An adapter schema that takes a knob it lacks while composing: a preset's `adapter.rank` is merged whatever
    `adapter=` chose, and `checks.typed` drops it for a type without a rank (OFT). A knob typed on the command line
    is refused for such a type before Hydra starts (`overrides.check_overrides`)."""
    node = OmegaConf.structured(schema)
    OmegaConf.set_struct(node, False)
    return node
