"""The engine: the LightningModule that trains a stack of members, what a member is, its
callbacks, checkpoints and evaluation."""
