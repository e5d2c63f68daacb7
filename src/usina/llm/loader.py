"""From a model URI to a loaded ``transformers`` model and tokenizer.

A URI is ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, an MLflow model directory, or a bare
checkpoint directory. Inside an MLflow model the checkpoint is the first directory holding a
``config.json`` (``artifacts/checkpoint`` for models logged by :mod:`usina.llm.mlflow_model`,
``model/`` for MLflow's own ``transformers`` flavour), so a real checkpoint from any registry
loads the same way. Loading is the plain ``AutoModelForCausalLM`` / ``AutoModel`` path.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from usina.errors import MissingExtraError, UsinaError

log = logging.getLogger(__name__)

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")
LLM_METADATA_KEY = "usina.llm"


class LLMLoadError(UsinaError):
    """A language model could not be found or loaded."""


def transformers_module() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise MissingExtraError("transformers", "llm") from exc
    return transformers


def _mlflow() -> Any:
    """MLflow, through usina's one MLflow adapter (it names the extra when it is missing)."""
    from usina.tracking import adapter

    return adapter.mlflow()


def find_checkpoint(root: Path) -> Path | None:
    """The shallowest directory under ``root`` with a transformers ``config.json``."""
    if (root / "config.json").is_file():
        return root
    found = sorted(root.rglob("config.json"), key=lambda p: len(p.parts))
    for path in found:
        try:
            if "model_type" in json.loads(path.read_text()):
                return path.parent
        except (OSError, ValueError):
            continue
    return None


def _flavours(mlmodel: Path) -> tuple[set[str], dict[str, Any]]:
    import yaml

    meta = yaml.safe_load(mlmodel.read_text()) or {}
    return set(meta.get("flavors") or {}), dict(meta.get("metadata") or {})


def is_language_model(uri: str, tracking_uri: str | None = None) -> bool:
    """Whether ``uri`` names a model this package serves (MLflow ``transformers`` flavour, a
    model logged with :func:`usina.llm.mlflow_model.log_checkpoint`, or a checkpoint dir)."""
    match = _MODELS_URI.match(uri)
    if match is None:
        path = Path(uri.removeprefix("file://")).expanduser()
        if (path / "MLmodel").is_file():
            flavours, metadata = _flavours(path / "MLmodel")
            return "transformers" in flavours or LLM_METADATA_KEY in metadata
        return (path / "config.json").is_file()
    mlflow = _mlflow()
    try:
        info = mlflow.models.get_model_info(_pinned(uri, tracking_uri))
    except Exception:
        return False  # not ours to explain: the tabular server reports a missing model
    return "transformers" in info.flavors or LLM_METADATA_KEY in (info.metadata or {})


def _client(tracking_uri: str | None) -> Any:
    mlflow = _mlflow()
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _pinned(uri: str, tracking_uri: str | None) -> str:
    """``models:/NAME/VERSION`` for an alias URI (the version it points at now)."""
    match = _MODELS_URI.match(uri)
    if match is None or match["alias"] is None:
        return uri
    version = _client(tracking_uri).get_model_version_by_alias(match["name"], match["alias"])
    return f"models:/{match['name']}/{version.version}"


def follows_alias(uri: str) -> bool:
    match = _MODELS_URI.match(uri)
    return match is not None and match["alias"] is not None


def current_version(uri: str, tracking_uri: str | None = None) -> str:
    """The version an alias URI points at now (a fixed URI: its own version)."""
    return _pinned(uri, tracking_uri).rsplit("/", 1)[1]


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """Where the checkpoint is on disk, and what to call it."""

    name: str
    version: str
    checkpoint: Path


def resolve(uri: str, tracking_uri: str | None = None) -> ResolvedModel:
    """Download (for a registry URI) and find the checkpoint directory."""
    match = _MODELS_URI.match(uri)
    if match is None:
        path = Path(uri.removeprefix("file://")).expanduser().resolve()
        checkpoint = find_checkpoint(path) if path.is_dir() else None
        if checkpoint is None:
            raise LLMLoadError(
                f"{uri!r} is neither a registry URI nor a directory holding a transformers "
                "checkpoint (config.json); pass models:/NAME@ALIAS or a checkpoint directory"
            )
        return ResolvedModel(path.name, "1", checkpoint)
    mlflow = _mlflow()
    try:
        pinned = _pinned(uri, tracking_uri)
        version = pinned.rsplit("/", 1)[1]
        target = tempfile.mkdtemp(prefix="usina-llm-")
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=pinned, dst_path=target, tracking_uri=tracking_uri
        )
    except Exception as exc:
        raise LLMLoadError(
            f"cannot fetch {uri!r} from the registry "
            f"({tracking_uri or 'MLFLOW_TRACKING_URI'}): {exc}"
        ) from exc
    checkpoint = find_checkpoint(Path(local))
    if checkpoint is None:
        raise LLMLoadError(f"{uri!r} (version {version}) holds no transformers config.json")
    return ResolvedModel(match["name"], version, checkpoint)


@dataclass(frozen=True, slots=True)
class LoadedLM:
    """A loaded model: ``generative`` for a causal LM (completions), else an encoder
    (embeddings only)."""

    name: str
    version: str
    model: Any
    tokenizer: Any
    generative: bool
    max_len: int


def load(resolved: ResolvedModel, name: str | None = None) -> LoadedLM:
    """``AutoModelForCausalLM`` when the config names a causal-LM architecture, else
    ``AutoModel`` (an encoder, served for embeddings)."""
    tf = transformers_module()
    path = str(resolved.checkpoint)
    try:
        config = tf.AutoConfig.from_pretrained(path)
        architectures = list(getattr(config, "architectures", None) or [])
        generative = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
        loader = tf.AutoModelForCausalLM if generative else tf.AutoModel
        model = loader.from_pretrained(path)
        model.eval()
        tokenizer = tf.AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise LLMLoadError(f"cannot load the checkpoint in {path}: {exc}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    max_len = int(getattr(config, "max_position_embeddings", 2048) or 2048)
    log.info(
        "loaded %s v%s from %s (%s, context %d)",
        name or resolved.name,
        resolved.version,
        path,
        "causal LM" if generative else "encoder",
        max_len,
    )
    return LoadedLM(name or resolved.name, resolved.version, model, tokenizer, generative, max_len)
