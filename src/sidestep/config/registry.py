"""What Hydra needs before it composes a Side-Step config: the schemas, Side-Step's resolvers, and config sources
that vet every file they read (`vetted_sources.py`)."""

from hydra.core.config_store import ConfigStore

from sidestep.config.parts import AttentionConfig, ModelConfig, SchedulerConfig, TrainingConfig
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
                          ("training", TrainingConfig)]:
        cs.store(group=f"schema/{group}", name="base", node=schema)
    for group, schemas in CHOSEN_BY_TARGET.items():
        for name, schema in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=schema)
