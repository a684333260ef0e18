"""Example and synthetic data sets."""
