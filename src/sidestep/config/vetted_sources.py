"""Hydra reads every config file through a `ConfigSource` of its scheme (`file://` for a folder, `pkg://` for a
package). These subclasses vet each file as it is read (`trust.vet_file`), before Hydra merges, resolves or builds
anything in it: a `--config-path` or `--config-dir` folder, a `hydra.searchpath` entry, a saved run's `.hydra/`,
and the recipes in Side-Step's own `conf/experiment/` (the wizard may write there). The rest of `sidestep.conf`
and Hydra's own packages are shipped code and are read as they are.

Hydra has no public way to wrap its file source (a plugin may not take a scheme already registered), so
`use_vetted_sources` puts these in its sources registry once Hydra has registered its own.
"""

import os
from pathlib import Path

from hydra._internal.core_plugins.file_config_source import FileConfigSource
from hydra._internal.core_plugins.importlib_resources_config_source import ImportlibResourcesConfigSource
from hydra._internal.sources_registry import SourcesRegistry
from hydra.core.plugins import Plugins
from hydra.plugins.config_source import ConfigResult

from sidestep.config.renamed_keys import renamed_config
from sidestep.config.trust import file_package, is_record, vet_file
from sidestep.config.yaml_data import check_yaml_file

APP_PACKAGE = "sidestep.conf"
RECIPE_GROUPS = ("experiment/",)  # of the app's own tree, the folder a user's recipes may be written to


def _vet(result: ConfigResult, config_path: str, where: str) -> ConfigResult:
    """Vetted, then in today's key names: a recipe's `lora:` section gets a note, a run's record none."""
    record, package = is_record(where), file_package(config_path, result.header)
    vet_file(result.config, where, package, record=record)
    if package == "":  # keys at the root: a recipe with `# @package _global_`, a run's record
        result.config = renamed_config(result.config, where, notify=not record)
    return result


class VettedFileConfigSource(FileConfigSource):
    def load_config(self, config_path: str) -> ConfigResult:
        full = Path(self.path, self._normalize_file_name(config_path))  # `self.path` has no scheme left
        if os.path.lexists(full):
            check_yaml_file(full, record=is_record(str(full)))
        result = super().load_config(config_path)
        return _vet(result, config_path, str(full))


class VettedPackageConfigSource(ImportlibResourcesConfigSource):
    def load_config(self, config_path: str) -> ConfigResult:
        result = super().load_config(config_path)
        if self.path != APP_PACKAGE or not config_path.lstrip("/").startswith(RECIPE_GROUPS):
            return result
        return _vet(result, config_path, f"{self.path}/{self._normalize_file_name(config_path)}")


# Hydra's registry refuses a second class for a scheme unless it bears the same name; a launcher's job process
# (submitit) restores Hydra's state, ours included, then registers Hydra's own sources again: same names, ours kept.
VettedFileConfigSource.__name__ = FileConfigSource.__name__
VettedPackageConfigSource.__name__ = ImportlibResourcesConfigSource.__name__


def use_vetted_sources() -> None:
    Plugins.instance()  # Hydra registers its own sources on first use; ours replace them afterwards
    registry = SourcesRegistry.instance().types
    registry[FileConfigSource.scheme()] = VettedFileConfigSource
    registry[ImportlibResourcesConfigSource.scheme()] = VettedPackageConfigSource
