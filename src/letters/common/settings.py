"""Which overrides are settings (what a run is) and which are set-up (where and how it runs):
run labels name a job by its settings, and reports group runs by them."""

from __future__ import annotations

# Overrides a continued job carries that the job did not start with: a sweep continued with
# resume=true is the same sweep, its jobs the same settings.
CONTINUATION_KEYS: tuple[str, ...] = ("resume",)

# Overrides that choose where and how a run happens rather than what it is: never in a name.
SETUP_KEYS: tuple[str, ...] = (
    "data",
    "hydra",
    "experiment",
    "hparams_search",
    *CONTINUATION_KEYS,
    "pictures",
    "torch_threads",
    "cache_dir",
    "debug",
    "logger",
    "trainer",
    "name",
)


def is_setup_key(key: str) -> bool:
    """``key`` as an override writes it (``data.root``, ``hydra/launcher``, ``+name``)."""
    return key.lstrip("+~").split(".")[0].split("/")[0] in SETUP_KEYS
