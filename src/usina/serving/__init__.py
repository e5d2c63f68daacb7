"""Model serving: the Open Inference Protocol (KServe V2) over REST and gRPC.

``usina serve MODEL_URI`` loads an MLflow model (native flavour when there is one), batches
requests dynamically, follows a registry alias with hot reload, validates every request,
sheds load with 503s past a bounded queue, drains on SIGTERM and exports Prometheus metrics.
Install with ``pip install 'usina[serving,grpc,mlflow]'``.

Modules: ``cli`` (the command), ``worker`` (one process; several via SO_REUSEPORT),
``rest`` and ``grpc_service`` (the protocols), ``grpc_h2`` (gRPC's HTTP/2 transport),
``codec`` (payloads and validation), ``batching``, ``repository`` (versions and hot reload),
``loader`` (the only mlflow import), ``model``, ``metrics``, ``settings``, ``errors``.
"""

from usina.serving.settings import BatchSettings, ServeSettings

__all__ = ["BatchSettings", "ServeSettings"]
