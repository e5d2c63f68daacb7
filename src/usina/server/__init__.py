"""The platform server: REST API, web UI and the multi-replica reconciler in one process.

``usina server`` (``usina.server.cli``) builds a ``ServerContext`` from its options and serves
``usina.server.app.create_app(context)`` with uvicorn. Needs the ``server`` extra
(``pip install 'usina[server]'``).
"""
