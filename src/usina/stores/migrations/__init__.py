"""Alembic migrations of the metadata store's schema, applied by ``usina.stores.migrate``."""
