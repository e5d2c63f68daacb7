"""Train one real model per flavour and save each as an MLflow model directory (run in a
subprocess by test_serving_flavours.py: importing mlflow and the model libraries is slow).

Usage: ``python make_flavours.py OUT_DIR``. For each model NAME it writes ``OUT_DIR/NAME`` (the
MLflow model) and ``OUT_DIR/NAME.json``: the request inputs (name, datatype, shape, data) and
what the flavour's *own* predict returns on them (the value the server must reproduce).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

warnings.simplefilter("ignore")

import lightgbm as lgb  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow.models import infer_signature  # noqa: E402

REQS = ["mlflow"]  # skip MLflow's slow requirement inference (it loads the model again)
UFS = ["SP", "RJ", "MG", "BA", "RS", "São Paulo ✓"]  # non-ASCII: BYTES are UTF-8


def table(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 50.0, n),
            "uf": rng.choice(UFS, n),
            "installments": rng.integers(1, 12, n).astype(np.int64),
        }
    )
    logit = (df.amount - 100) / 50 + np.where(df.uf == "RJ", 1.5, 0.0) - 0.1 * df.installments
    y = (logit + rng.normal(scale=0.5, size=n) > 0).astype(int).to_numpy()
    # Plain object column labels: MLflow compares them with a range, which pandas >= 3
    # deprecates for its Arrow-backed string labels.
    df.columns = pd.Index(list(df.columns), dtype=object)
    return df, y


def numeric(df: pd.DataFrame) -> pd.DataFrame:
    out = df[["amount", "installments"]].astype(np.float64)
    out.columns = pd.Index(list(out.columns), dtype=object)
    return out


def column(name: str, values: Any) -> dict[str, Any]:
    arr = np.asarray(values)
    if arr.dtype.kind in "OUS":
        return {"name": name, "datatype": "BYTES", "shape": [len(arr)], "data": arr.tolist()}
    datatype = {"f": "FP64", "i": "INT64", "b": "BOOL"}[arr.dtype.kind]
    if arr.dtype == np.float32:
        datatype = "FP32"
    return {"name": name, "datatype": datatype, "shape": list(arr.shape), "data": arr.tolist()}


def write(out: Path, name: str, inputs: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    doc = {"inputs": inputs, "expected": {k: np.asarray(v).tolist() for k, v in expected.items()}}
    (out / f"{name}.json").write_text(json.dumps(doc))


def sklearn_models(out: Path, df: pd.DataFrame, y: np.ndarray, test: pd.DataFrame) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    x = numeric(df)
    estimator = LogisticRegression().fit(x, y)  # fitted on a DataFrame: has feature names
    mlflow.sklearn.save_model(
        estimator,
        out / "sk_estimator",
        signature=infer_signature(x, estimator.predict(x)),
        input_example=x.head(3),
        pip_requirements=REQS,
    )
    tx = numeric(test)
    write(
        out,
        "sk_estimator",
        [column(c, tx[c]) for c in tx.columns],
        {"predict_proba": estimator.predict_proba(tx), "predict": estimator.predict(tx)},
    )

    pipeline = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [
                        ("uf", OneHotEncoder(handle_unknown="ignore"), ["uf"]),
                        ("num", StandardScaler(), ["amount", "installments"]),
                    ]
                ),
            ),
            ("model", LogisticRegression()),
        ]
    ).fit(df, y)
    mlflow.sklearn.save_model(
        pipeline,
        out / "sk_pipeline",
        signature=infer_signature(df, pipeline.predict(df)),
        input_example=df.head(3),
        pip_requirements=REQS,
    )
    write(
        out,
        "sk_pipeline",
        [column(c, test[c]) for c in test.columns],
        {"predict_proba": pipeline.predict_proba(test), "predict": pipeline.predict(test)},
    )


def boosters(out: Path, df: pd.DataFrame, y: np.ndarray, test: pd.DataFrame) -> None:
    import xgboost as xgb

    x, tx = numeric(df), numeric(test)
    # Some amounts missing in training: the signature marks 'amount' optional (required:
    # false), so the server accepts missing amounts (null / NaN) for this model only.
    gaps = x.copy()
    gaps.loc[gaps.index[::7], "amount"] = np.nan
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(gaps, y), 20)
    mlflow.lightgbm.save_model(
        booster,
        out / "lightgbm",
        signature=infer_signature(gaps, booster.predict(gaps)),
        pip_requirements=REQS,
    )
    write(out, "lightgbm", [column(c, tx[c]) for c in tx.columns], {"predict": booster.predict(tx)})

    clf = xgb.XGBClassifier(n_estimators=20, max_depth=3).fit(x, y)
    mlflow.xgboost.save_model(
        clf,
        out / "xgboost",
        signature=infer_signature(x, clf.predict(x)),
        input_example=x.head(2),
        pip_requirements=REQS,
    )
    write(
        out,
        "xgboost",
        [column(c, tx[c]) for c in tx.columns],
        {"predict_proba": clf.predict_proba(tx), "predict": clf.predict(tx)},
    )


def torch_model(out: Path, df: pd.DataFrame, test: pd.DataFrame) -> None:
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    x = numeric(df).to_numpy(dtype=np.float32)
    with torch.no_grad():
        y = module(torch.from_numpy(x)).numpy()
    mlflow.pytorch.save_model(
        module,
        out / "pytorch",
        signature=infer_signature(x, y),
        input_example=x[:2],
        pip_requirements=REQS,
    )
    tx = numeric(test).to_numpy(dtype=np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(tx)).numpy()
    inp = {"name": "input-0", "datatype": "FP32", "shape": list(tx.shape), "data": tx.tolist()}
    write(out, "pytorch", [inp], {"predict": expected})


def onnx_models(out: Path, df: pd.DataFrame, y: np.ndarray, test: pd.DataFrame) -> None:
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x = numeric(df).to_numpy(dtype=np.float32)
    clf = LogisticRegression().fit(x, y)
    proto = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}})
    mlflow.onnx.save_model(proto, out / "onnx", input_example=x[:2], pip_requirements=REQS)
    session = onnxruntime.InferenceSession(proto.SerializeToString())
    tx = numeric(test).to_numpy(dtype=np.float32)
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {session.get_inputs()[0].name: tx})
    inp = {"name": session.get_inputs()[0].name, "datatype": "FP32", "shape": list(tx.shape)}
    inp["data"] = tx.tolist()
    write(out, "onnx", [inp], dict(zip(names, values, strict=True)))

    # Two inputs, two outputs: a graph made by hand.
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 3])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, 3])
    total = helper.make_tensor_value_info("total", TensorProto.FLOAT, [None, 3])
    product = helper.make_tensor_value_info("product", TensorProto.FLOAT, [None, 3])
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "b"], ["total"]),
            helper.make_node("Mul", ["a", "b"], ["product"]),
        ],
        "two",
        [a, b],
        [total, product],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    rng = np.random.default_rng(3)
    va, vb = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(4, 3)).astype(np.float32)
    sig = infer_signature({"a": va, "b": vb}, {"total": va + vb, "product": va * vb})
    mlflow.onnx.save_model(model, out / "onnx_two", signature=sig, pip_requirements=REQS)
    two = onnxruntime.InferenceSession(model.SerializeToString())
    got = two.run(["total", "product"], {"a": va, "b": vb})
    inputs = [
        {"name": n, "datatype": "FP32", "shape": [4, 3], "data": v.tolist()}
        for n, v in (("a", va), ("b", vb))
    ]
    write(out, "onnx_two", inputs, {"total": got[0], "product": got[1]})


class Surcharge(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
    """A plain-Python model: served through MLflow pyfunc, the general fallback."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        factor = np.where(model_input["uf"] == "RJ", 2.0, 1.0)
        return pd.DataFrame(
            {
                "fee": model_input["amount"].to_numpy() * factor / model_input["installments"],
                "region": np.where(model_input["uf"].isin(["SP", "RJ", "MG"]), "SE", "other"),
            }
        )


def pyfunc_model(out: Path, df: pd.DataFrame, test: pd.DataFrame) -> None:
    sample = Surcharge().predict(None, df.head(20))
    mlflow.pyfunc.save_model(
        out / "pyfunc",
        python_model=Surcharge(),
        signature=infer_signature(df.head(20), sample),
        input_example=df.head(3),
        pip_requirements=REQS,
    )
    loaded = mlflow.pyfunc.load_model(str(out / "pyfunc"))
    expected = loaded.predict(test)
    write(
        out,
        "pyfunc",
        [column(c, test[c]) for c in test.columns],
        {"fee": expected["fee"].to_numpy(), "region": expected["region"].to_numpy()},
    )


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    df, y = table(600, 1)
    test, _ = table(25, 2)
    sklearn_models(out, df, y, test)
    boosters(out, df, y, test)
    torch_model(out, df, test)
    onnx_models(out, df, y, test)
    pyfunc_model(out, df, test)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
