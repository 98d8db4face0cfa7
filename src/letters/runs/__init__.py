"""Running jobs: prepare a job's config, build and fit a stack, record each run, ensembles,
resumption, threads and trackers."""
