"""Experiment tracking adapters (MLflow)."""
