"""custom_search_space of conf/custom_space.yaml: y within 0.3 of the sampled x."""


def near_x(cfg, trial) -> None:
    x = trial.params["x"]
    trial.suggest_float("y", x - 0.3, x + 0.3)
