"""The REST API's routes, one module per resource (assembled by ``usina.server.api``)."""
