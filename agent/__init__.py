"""The rollguard host agent: checks, a publisher with a store-and-forward buffer, and a
command executor, driven by ``rollguard-agent --config FILE``."""

__version__ = "0.1.0"
