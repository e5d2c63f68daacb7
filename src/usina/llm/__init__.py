"""Serving language models: an OpenAI-compatible API over a continuous-batching scheduler.

``usina serve models:/NAME@ALIAS`` hands a causal LM (a ``transformers`` checkpoint, logged to
MLflow) to this package instead of the tabular Open Inference Protocol server. Modules:
``settings`` (the knobs), ``loader`` (registry URI -> checkpoint directory -> transformers
model), ``kv`` (batched KV-cache surgery), ``sampling`` (per-sequence sampling and stop
strings), ``engine`` (the scheduler loop), ``metrics`` (Prometheus), ``api`` (the HTTP app),
``cli`` (``usina llm serve``), ``mlflow_model`` (logging a checkpoint to the registry).
"""
