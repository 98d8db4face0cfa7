"""letters: recognise photographed English letters with an MLP whose every gradient is
written by hand (letters.nn.autograd), trained and swept with Lightning and Hydra."""

__version__ = "0.1.0"
