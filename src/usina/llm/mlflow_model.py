"""A ``transformers`` checkpoint in the MLflow registry, as a pyfunc that usina serves as an LLM.

MLflow's own ``transformers`` flavour does not log checkpoints of current transformers releases
(5.x), so the checkpoint directory is logged unchanged as a pyfunc artifact with the metadata
key ``usina.llm``; :mod:`usina.llm.loader` finds its ``config.json`` either way. The pyfunc's
``predict`` generates with ``model.generate``, so ``mlflow.pyfunc.load_model`` works too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from usina.llm.loader import LLM_METADATA_KEY, _mlflow, transformers_module

if TYPE_CHECKING:
    _Base = object
else:
    try:  # the base class exists only with mlflow installed; the LLM server never needs it
        from usina.tracking import adapter

        _Base = adapter.submodule("pyfunc.model").PythonModel
    except ImportError:  # pragma: no cover
        _Base = object


class CausalLMPyfunc(_Base):
    """Prompts (a column or list of strings) -> completions, greedy, up to 64 new tokens."""

    def load_context(self, context: Any) -> None:
        tf = transformers_module()
        path = context.artifacts["checkpoint"]
        self.model = tf.AutoModelForCausalLM.from_pretrained(path)
        self.model.eval()
        self.tokenizer = tf.AutoTokenizer.from_pretrained(path)

    def predict(self, context: Any, model_input: list[str], params: Any = None) -> list[str]:
        import torch

        rows: Any = model_input  # MLflow may hand over a DataFrame of one column
        prompts = list(rows.iloc[:, 0] if hasattr(rows, "iloc") else rows)
        out: list[str] = []
        for prompt in prompts:
            ids = self.tokenizer(str(prompt), return_tensors="pt")["input_ids"]
            with torch.no_grad():
                gen = self.model.generate(ids, max_new_tokens=64, do_sample=False)
            out.append(self.tokenizer.decode(gen[0, ids.shape[1] :], skip_special_tokens=True))
        return out


def log_checkpoint(
    checkpoint: str,
    *,
    name: str,
    metrics: dict[str, float] | None = None,
    alias: str | None = "champion",
    tracking_uri: str | None = None,
    run_id: str | None = None,
) -> tuple[str, str]:
    """Log ``checkpoint`` as a model, register a version of ``name`` and (optionally) point
    ``alias`` at it. Returns (version, model URI of the version)."""
    import os

    import torch

    mlflow = _mlflow()
    tf = transformers_module()
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    run_id = run_id or os.environ.get("MLFLOW_RUN_ID") or None
    experiment_id = None
    if run_id is None:
        found = client.get_experiment_by_name(name)
        experiment_id = found.experiment_id if found else client.create_experiment(name)
    with mlflow.start_run(run_id=run_id, experiment_id=experiment_id):
        if metrics:
            mlflow.log_metrics(metrics)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=CausalLMPyfunc(),
            artifacts={"checkpoint": checkpoint},
            metadata={LLM_METADATA_KEY: {"task": "text-generation"}},
            pip_requirements=[
                f"transformers=={tf.__version__}",
                f"torch=={torch.__version__.split('+')[0]}",
            ],
        )
        version = mlflow.register_model(info.model_uri, name)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return str(version.version), f"models:/{name}/{version.version}"
