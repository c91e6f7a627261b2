"""The version of segfix-pytorch, in a module of its own so that the command line reads it without the package."""

__version__ = "0.1.0"
