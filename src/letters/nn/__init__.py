"""The hand-written network: autograd Functions with their own backward passes, the stacked
MLP built from them, and augmentation on the device."""
