"""The launcher's config, ``hydra/launcher=stacked`` (``hydra.launcher.max_stack=...``)."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class StackedLauncherConf:
    _target_: str = "hydra_plugins.letters_stacked_launcher.stacked_launcher.StackedLauncher"
    # At most this many jobs are trained in one stack; a larger group of compatible jobs is
    # trained as several stacks, one after another.
    max_stack: int = 64


ConfigStore.instance().store(
    group="hydra/launcher", name="stacked", node=StackedLauncherConf, provider="letters"
)
