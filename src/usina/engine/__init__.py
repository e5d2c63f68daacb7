"""The engine: a level-triggered reconciler over the metadata store."""
