"""rlhf_lab: reinforcement learning from human feedback, on a tiny offline world or hub models."""

__version__ = "0.1.0"
