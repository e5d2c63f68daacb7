"""The usina command line."""
