"""The numpy fast path of scikit-learn Pipelines on typed columns: equal to the Pipeline's own
``predict``/``predict_proba`` whenever it is used, and not used when it cannot be."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from usina.serving.model import Layout, TensorMeta
from usina.serving.predictors import Inputs, build, sklearn_columns_fast

UFS = ["SP", "RJ", "MG", "BA", "RS"]
MCCS = ["5411", "5812", "7995"]
METAS = (
    TensorMeta("amount", "FP64", (-1,)),
    TensorMeta("uf", "BYTES", (-1,)),
    TensorMeta("mcc", "BYTES", (-1,)),
    TensorMeta("installments", "INT64", (-1,)),
)


def _frame(n: int, seed: int = 0):
    import pandas as pd

    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 80.0, n),
            "uf": rng.choice(UFS, n).astype(object),
            "mcc": rng.choice(MCCS, n).astype(object),
            "installments": rng.integers(1, 13, n).astype(np.int64),
        }
    )


def _batch(frame) -> dict[str, np.ndarray]:
    out = {}
    for name in frame.columns:
        values = frame[name].to_numpy()
        if values.dtype == object:
            column = np.empty(len(values), dtype=object)
            column[:] = values.tolist()
            values = column
        out[name] = values
    return out


def _pipeline(cat=None, num=None, remainder="drop", final=None):
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = _frame(400)
    y = ((frame.amount > 160) ^ (frame.mcc == "7995")).astype(int)
    columns = ColumnTransformer(
        [
            ("cat", cat or OneHotEncoder(handle_unknown="ignore"), ["uf", "mcc"]),
            ("num", num or StandardScaler(), ["amount"]),
        ],
        remainder=remainder,
    )
    return Pipeline([("columns", columns), ("model", final or LogisticRegression())]).fit(
        frame, y
    ), y


def _inputs(frame) -> Inputs:
    return Inputs(METAS, Layout.NAMED, True, _batch(frame.head(3)))


def _classifier_cases():
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    return {
        "onehot-ignore": _pipeline(),
        "onehot-error": _pipeline(cat=OneHotEncoder(handle_unknown="error")),
        "dense-onehot": _pipeline(cat=OneHotEncoder(sparse_output=False, dtype=np.float32)),
        "passthrough-rest": _pipeline(remainder="passthrough"),
        "scaler-no-mean": _pipeline(num=StandardScaler(with_mean=False)),
    }


@pytest.mark.parametrize("case", list(_classifier_cases()))
def test_fast_path_equals_the_pipeline(case):
    native, _ = _classifier_cases()[case]
    frame = _frame(300, seed=1)
    fast = sklearn_columns_fast(native, _inputs(frame), "predict_proba")
    assert fast is not None, "this Pipeline shape has a fast path"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = fast(_batch(frame))
        one = fast(_batch(frame.head(1)))
    expected = native.predict_proba(frame)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(one, expected[:1], rtol=1e-9, atol=1e-12)


def test_the_predictor_serves_the_fast_path_and_predict_equals_the_pipeline():
    native, _ = _pipeline()
    frame = _frame(50, seed=2)
    predictor = build(native, "sklearn", None, _inputs(frame), 1)
    out = predictor.predict(_batch(frame))
    np.testing.assert_allclose(out["predict_proba"], native.predict_proba(frame), rtol=1e-9)
    np.testing.assert_array_equal(out["predict"], native.predict(frame))


def test_unknown_categories_are_ignored_or_refused_as_the_encoder_says():
    from sklearn.preprocessing import OneHotEncoder

    frame = _frame(5, seed=3)
    frame.loc[2, "uf"] = "XX"  # a state the encoder never saw
    native, _ = _pipeline()
    fast = sklearn_columns_fast(native, _inputs(_frame(3)), "predict_proba")
    assert fast is not None
    np.testing.assert_allclose(fast(_batch(frame)), native.predict_proba(frame), rtol=1e-9)
    strict, _ = _pipeline(cat=OneHotEncoder(handle_unknown="error"))
    fast = sklearn_columns_fast(strict, _inputs(_frame(3)), "predict_proba")
    assert fast is not None
    with pytest.raises(ValueError, match="unknown categor"):
        strict.predict_proba(frame)  # the Pipeline refuses it too
    with pytest.raises(ValueError, match="unknown categor"):
        fast(_batch(frame))


def test_a_missing_string_goes_to_the_pipeline():
    native, _ = _pipeline()
    frame = _frame(4, seed=4)
    batch = _batch(frame)
    batch["uf"][1] = None  # an optional string column left out: the encoder's own rules
    fast = sklearn_columns_fast(native, _inputs(frame), "predict_proba")
    assert fast is not None
    import pandas as pd

    expected = native.predict_proba(pd.DataFrame(batch))
    np.testing.assert_allclose(fast(batch), expected, rtol=1e-9)


def test_regressor_predict_uses_the_fast_path():
    from sklearn.linear_model import Ridge

    native, _ = _pipeline(final=Ridge())
    frame = _frame(40, seed=5)
    fast = sklearn_columns_fast(native, _inputs(frame), "predict")
    assert fast is not None
    np.testing.assert_allclose(fast(_batch(frame)), native.predict(frame), rtol=1e-9)


def test_other_pipeline_shapes_keep_calling_the_pipeline():
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    frame = _frame(10)
    unsupported = [
        _pipeline(cat=OrdinalEncoder())[0],  # a transformer without a fast path
        _pipeline(cat=OneHotEncoder(drop="first"))[0],  # dropped categories
        _pipeline(cat=OneHotEncoder(min_frequency=50, handle_unknown="infrequent_if_exist"))[0],
    ]
    weighted, y = _pipeline()
    weighted.steps[0][1].set_params(transformer_weights={"cat": 2.0})
    unsupported.append(weighted.fit(_frame(400), y))  # weights scale a transformer's output
    for native in unsupported:
        assert sklearn_columns_fast(native, _inputs(frame), "predict_proba") is None
        predictor = build(native, "sklearn", None, _inputs(frame), 1)
        np.testing.assert_allclose(
            predictor.predict(_batch(frame))["predict_proba"], native.predict_proba(frame)
        )


def test_a_numeric_pipeline_on_a_matrix_uses_the_fast_path():
    """Numeric columns arrive as one matrix (Layout.COLUMNS): the fast path reads its columns
    by the signature's names, whatever order the ColumnTransformer lists them in."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    frame = _frame(200)[["amount", "installments"]].astype(np.float64)
    y = (frame.amount > 160).astype(int)
    native = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [("scale", StandardScaler(), ["installments"])], remainder="passthrough"
                ),
            ),
            ("model", LogisticRegression()),
        ]
    ).fit(frame, y)
    metas = (TensorMeta("amount", "FP64", (-1,)), TensorMeta("installments", "INT64", (-1,)))
    matrix = frame.to_numpy()
    inputs = Inputs(metas, Layout.COLUMNS, True, matrix[:2])
    fast = sklearn_columns_fast(native, inputs, "predict_proba")
    assert fast is not None
    np.testing.assert_allclose(fast(matrix), native.predict_proba(frame), rtol=1e-9, atol=1e-12)
    predictor = build(native, "sklearn", None, inputs, 1)
    np.testing.assert_array_equal(predictor.predict(matrix)["predict"], native.predict(frame))
