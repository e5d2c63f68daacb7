"""Stores: metadata in SQL, artifacts content-addressed over fsspec."""
