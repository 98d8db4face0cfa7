"""A config loader that composes each job of a sweep once, not twice.

Hydra's sweepers check a batch before launching it (``Sweeper.validate_batch_is_legal``
composes every job's config, to fail early), then the launcher composes each of them again
to run it: for a local launcher, the same composition twice. Composing letters' config takes
about 0.14 s of one core on a 2-core VM (Hydra parses every YAML file again), so a table of
15 jobs spent 2 s before its first step composing configs that it already had.

``RememberingConfigLoader`` wraps the sweep's loader (the launcher swaps it into the
``HydraContext`` it shares with the sweeper): it remembers what ``load_sweep_config``
returned for each job's overrides and hands the launcher's call a copy, once; everything else
goes to Hydra's loader as it is. What a launch composes without a check before it is not
remembered, and what it leaves (a launcher that composes in another process: submitit's jobs)
is dropped at its end.

Imported by Hydra's plugin scan whenever any Hydra app starts: Hydra, OmegaConf and the
standard library only.
"""

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hydra.core.config_loader import ConfigLoader
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigSource
from hydra.types import HydraContext, RunMode
from omegaconf import DictConfig


class RememberingConfigLoader(ConfigLoader):
    """Hydra's config loader, but a job's sweep config composed for a sweeper's check is
    handed to the launcher's call for the same job instead of being composed again."""

    def __init__(self, loader: ConfigLoader) -> None:
        self.loader = loader
        # (id of the sweep's master config, the job's overrides) -> its composed config.
        self.remembered: dict[tuple[int, tuple[str, ...]], DictConfig] = {}
        self.in_launch = False

    @classmethod
    def install(cls, hydra_context: HydraContext) -> "RememberingConfigLoader":
        """Wrap the context's loader (once): the sweeper and the launcher share the context."""
        loader = hydra_context.config_loader
        if not isinstance(loader, cls):
            loader = hydra_context.config_loader = cls(loader)
        return loader

    def load_sweep_config(
        self, master_config: DictConfig, sweep_overrides: list[str]
    ) -> DictConfig:
        """A job's config: the one composed for these overrides before, if no launch has had
        it yet (taken: a later call composes afresh); else composed now, and remembered for
        the launch unless this call is the launch's."""
        key = (id(master_config), tuple(sweep_overrides))
        remembered = self.remembered.pop(key, None)
        if remembered is not None:
            return remembered
        composed = self.loader.load_sweep_config(master_config, list(sweep_overrides))
        if not self.in_launch:
            self.remembered[key] = copy.deepcopy(composed)  # the caller may change its own
        return composed

    @contextmanager
    def launch(self) -> Iterator[None]:
        """A launch: what it composes is not remembered (nobody asks twice), and what it did
        not take is dropped at its end (a batch that failed, or that ran elsewhere)."""
        self.in_launch = True
        try:
            yield
        finally:
            self.in_launch = False
            self.forget()

    def forget(self) -> None:
        """Drop every remembered config: for a launch whose jobs compose theirs elsewhere
        (each submitit job on its machine), which would otherwise carry them all along."""
        self.remembered.clear()

    # Everything else is Hydra's loader's.

    def load_configuration(
        self,
        config_name: str | None,
        overrides: list[str],
        run_mode: RunMode,
        from_shell: bool = True,
        validate_sweep_overrides: bool = True,
    ) -> DictConfig:
        return self.loader.load_configuration(
            config_name,
            overrides,
            run_mode,
            from_shell=from_shell,
            validate_sweep_overrides=validate_sweep_overrides,
        )

    def get_search_path(self) -> ConfigSearchPath:
        return self.loader.get_search_path()

    def get_sources(self) -> list[ConfigSource]:
        return self.loader.get_sources()

    def list_groups(self, parent_name: str) -> list[str]:
        return self.loader.list_groups(parent_name)

    def get_group_options(
        self,
        group_name: str,
        results_filter: ObjectType | None = ObjectType.CONFIG,
        config_name: str | None = None,
        overrides: list[str] | None = None,
    ) -> list[str]:
        return self.loader.get_group_options(group_name, results_filter, config_name, overrides)

    def compute_defaults_list(
        self, config_name: str | None, overrides: list[str], run_mode: RunMode
    ) -> Any:
        return self.loader.compute_defaults_list(config_name, overrides, run_mode)

    def __getattr__(self, name: str) -> Any:
        # What Hydra's own loader offers beyond the interface (ConfigLoaderImpl's helpers);
        # never its special names, nor ``loader`` itself before it is set (unpickling).
        if name.startswith("__") or name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)
