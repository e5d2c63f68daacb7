"""The registry gate scores a test set the same way for every flavour of the shared table:
higher means more likely positive (a classifier's probability of class 1)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from usina.tracking.flavours import FLAVOURS, flavour


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    y = (x.a + 0.3 * x.b > 0).astype(int).to_numpy()
    return x, y


def test_sklearn_and_xgboost_classifiers_are_scored_by_probability(data):
    import xgboost as xgb
    from sklearn.linear_model import LogisticRegression

    x, y = data
    for name, model in (
        ("sklearn", LogisticRegression().fit(x, y)),
        ("xgboost", xgb.XGBClassifier(n_estimators=10).fit(x, y)),
    ):
        scores = flavour(name).score(model, x)
        np.testing.assert_allclose(scores, model.predict_proba(x)[:, 1])


def test_lightgbm_booster_and_torch_logits(data):
    import lightgbm as lgb
    import torch

    x, y = data
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(x, y), 10)
    np.testing.assert_allclose(flavour("lightgbm").score(booster, x), booster.predict(x))
    with pytest.raises(ValueError, match="lacks"):
        flavour("lightgbm").score(booster, x[["a"]])
    module = torch.nn.Linear(2, 1)
    with torch.no_grad():
        logits = (
            module(torch.as_tensor(x.to_numpy(dtype=np.float32, copy=True))).numpy().reshape(-1)
        )
    np.testing.assert_allclose(
        flavour("pytorch").score(module, x), 1 / (1 + np.exp(-logits)), rtol=1e-5
    )


def test_onnx_graph_and_pyfunc(data):
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x, y = data
    clf = LogisticRegression().fit(x.to_numpy(dtype=np.float32), y)
    proto = to_onnx(clf, x.to_numpy(dtype=np.float32)[:1], options={id(clf): {"zipmap": False}})
    np.testing.assert_allclose(
        flavour("onnx").score(proto, x), clf.predict_proba(x.to_numpy())[:, 1], rtol=1e-4, atol=1e-5
    )

    class Rule:
        def predict(self, frame: pd.DataFrame) -> np.ndarray:
            return (frame["a"] > 0).to_numpy(dtype=float)

    np.testing.assert_array_equal(flavour("pyfunc").score(Rule(), x), (x.a > 0).astype(float))
    assert {f.name for f in FLAVOURS} >= {"sklearn", "xgboost", "onnx", "python_function"}
