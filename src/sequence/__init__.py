"""Sequence: a self-hostable platform for hosted Python trading strategies."""

__version__ = "0.4.0"
