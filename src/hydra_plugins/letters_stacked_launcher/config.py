"""The launchers' configs: ``hydra/launcher=stacked`` (``hydra.launcher.max_stack=...``), and
``stacked_submitit_local`` and ``stacked_submitit_slurm``, which have every key of Hydra's
``submitit_local`` and ``submitit_slurm`` (they are those configs, extended) plus ``max_stack``."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf

PACKAGE = "hydra_plugins.letters_stacked_launcher"


@dataclass
class StackingConf:
    # At most this many jobs are trained in one stack; a larger group of compatible jobs is
    # trained as several stacks.
    max_stack: int = 64


@dataclass
class StackedLauncherConf(StackingConf):
    _target_: str = f"{PACKAGE}.stacked_launcher.StackedLauncher"


@dataclass
class StackedLocalConf(StackingConf, LocalQueueConf):
    """Each stack is one job of submitit's local executor: a process of its own, all at once."""

    _target_: str = f"{PACKAGE}.submitit_launcher.StackedLocalLauncher"


@dataclass
class StackedSlurmConf(StackingConf, SlurmQueueConf):
    """Each stack is one task of a SLURM job array (at most ``array_parallelism`` at once)."""

    _target_: str = f"{PACKAGE}.submitit_launcher.StackedSlurmLauncher"
    # Arguments added to the srun line of the sbatch script (submitit's srun_args; newer
    # releases of Hydra's submitit_slurm have the key, hydra-submitit-launcher 1.2.0 not yet).
    srun_args: list[str] | None = None


ConfigStore.instance().store(
    group="hydra/launcher", name="stacked", node=StackedLauncherConf, provider="letters"
)
ConfigStore.instance().store(
    group="hydra/launcher", name="stacked_submitit_local", node=StackedLocalConf, provider="letters"
)
ConfigStore.instance().store(
    group="hydra/launcher", name="stacked_submitit_slurm", node=StackedSlurmConf, provider="letters"
)
