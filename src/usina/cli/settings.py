"""Settings of the command line (defined with the composition root, ``usina.compose``)."""

from usina.compose.settings import Settings

__all__ = ["Settings"]
