"""The stacked optimizer: K members' updates in one step, each with its own settings."""
