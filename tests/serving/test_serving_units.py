"""Hermetic unit tests: request validation (codec) and the batcher, on an in-memory model."""

from __future__ import annotations

import asyncio
import re

import numpy as np
import pytest

from usina.serving.batching import Batcher
from usina.serving.codec import InputTensor, assemble, json_array, parse_rest
from usina.serving.errors import InvalidInputError, OverloadedError
from usina.serving.metrics import ServingMetrics
from usina.serving.model import Layout, LoadedModel, TensorMeta
from usina.serving.settings import BatchSettings

CALLS: list[int] = []


def _predict(batch):
    CALLS.append(batch.shape[0])
    return {"predict": batch.sum(axis=1)}


def model(version: str = "1") -> LoadedModel:
    return LoadedModel(
        name="m",
        version=version,
        platform="test",
        flavour="test",
        layout=Layout.COLUMNS,
        inputs=(TensorMeta("a", "FP64", (-1,)), TensorMeta("n", "INT64", (-1,))),
        outputs=(TensorMeta("predict", "FP64", (-1,)),),
        predict=_predict,
        batch_dtype=np.dtype(np.float64),
        score_output="predict",
    )


def tensor(name, datatype, shape, data):
    return InputTensor(name, datatype, tuple(shape), json_array(name, datatype, tuple(shape), data))


def test_named_inputs_and_matrix_build_the_same_batch():
    m = model()
    named = assemble(m, [tensor("n", "INT64", [2], [1, 2]), tensor("a", "FP64", [2, 1], [0.5, 1])])
    matrix = assemble(m, [tensor("x", "FP64", [2, 2], [[0.5, 1], [1.0, 2]])])
    np.testing.assert_array_equal(named, matrix)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([("x", "FP64", [1, 3], [1, 2, 3])], "3 columns"),
        ([("x", "FP64", [1, 2], [1.5, 2.5])], "'n' is INT64: it needs whole numbers"),
        ([("x", "FP64", [1, 2], [1.0, None])], "'n' is null/NaN"),
        ([("a", "FP64", [1], [1.0])], "missing input"),
        ([("a", "FP64", [1], [1]), ("n", "INT64", [1], [1]), ("z", "FP64", [1], [1])], "unknown"),
        ([("a", "FP64", [1], [1]), ("n", "FP64", [1], [1])], "does not fit"),
        ([("a", "FP64", [2], [1, 2]), ("n", "INT64", [1], [1])], "rows"),
        ([("x", "FP64", [0, 2], [])], "no rows"),
    ],
)
def test_invalid_inputs_say_what_is_wrong(inputs, message):
    with pytest.raises(InvalidInputError, match=message):
        assemble(model(), [tensor(*i) for i in inputs])


@pytest.mark.parametrize(
    ("name", "datatype", "shape", "data", "message"),
    [
        ("n", "INT64", [1], [None], "null/NaN"),
        ("n", "INT8", [1], [300], "out of range"),
        ("a", "FP64", [2], [1.0], "needs 2 values"),
        ("a", "FP64", [1], ["x"], "cannot hold"),
        ("a", "FP64", [2], [[1], [2, 3]], "rectangular"),
    ],
)
def test_json_data_checks(name, datatype, shape, data, message):
    with pytest.raises(InvalidInputError, match=message):
        json_array(name, datatype, tuple(shape), data)


def test_rest_binary_extension():
    payload = np.array([[0.5, 2.0]], dtype=np.float32).tobytes()
    head = (
        b'{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32",'
        b'"parameters":{"binary_data_size":8}}]}'
    )
    request = parse_rest(head + payload, len(head))
    np.testing.assert_array_equal(request.inputs[0].data, [0.5, 2.0])
    with pytest.raises(InvalidInputError, match="no input claims"):
        parse_rest(head + payload + b"x", len(head))
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        parse_rest(b"{", None)


def test_batcher_batches_splits_exactly_and_sheds():
    async def main():
        CALLS.clear()
        settings = BatchSettings(max_batch_size=8, max_wait_ms=50, max_queue=12)
        batcher = Batcher("m", settings, ServingMetrics())
        m = model()
        rows = [np.array([[float(i), float(i)]]) for i in range(12)]
        # Not started yet: the twelve wait in the queue, the thirteenth is refused at once.
        waiting = [asyncio.ensure_future(batcher.submit(m, r)) for r in rows]
        await asyncio.sleep(0)
        with pytest.raises(OverloadedError, match="retry later"):
            await batcher.submit(m, rows[0])
        batcher.start()
        results = await asyncio.gather(*waiting)
        assert [float(r["predict"][0]) for r in results] == [2.0 * i for i in range(12)]
        assert CALLS == [8, 4]  # bounded by max_batch_size, split back per request
        await batcher.stop()

    asyncio.run(main())


def test_batcher_never_mixes_versions_and_skips_cancelled():
    async def main():
        CALLS.clear()
        batcher = Batcher("m", BatchSettings(max_batch_size=8, max_wait_ms=20), ServingMetrics())
        batcher.start()
        old, new = model("1"), model("2")
        one = np.array([[1.0, 1.0]])
        cancelled = asyncio.ensure_future(batcher.submit(old, one))
        first = asyncio.ensure_future(batcher.submit(old, one))
        second = asyncio.ensure_future(batcher.submit(new, one))
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.gather(first, second)
        assert CALLS == [1, 1]  # the cancelled request was dropped; versions never mixed
        await batcher.stop()

    asyncio.run(main())


def test_serve_refuses_what_one_process_cannot_keep():
    from typer.testing import CliRunner

    from usina.serving.cli import app

    runner = CliRunner()
    cases = [
        (["models:/m@champion", "--rollout", "canary", "--workers", "2"], "--workers 1"),
        (["models:/m@champion", "--repository-api", "--workers", "2"], "--workers 1"),
        (["models:/m@champion", "--rollout", "bluegreen"], "shadow or canary"),
        (["models:/m@champion", "--rollout", "canary", "--rollout-steps", "50,10"], "increase"),
    ]
    for args, message in cases:
        result = runner.invoke(app(), args)
        assert result.exit_code == 2, (args, result.output)
        text = " ".join(re.sub("[\u2500-\u257f]", " ", result.output).split())  # no box
        assert message in text, result.output


# --------------------------------------------------------------------------- hostile values
# Each case of issue #14 item 5: refused as InvalidInputError (400 / INVALID_ARGUMENT) with a
# message naming the input, before the model ever sees the batch.


def optional_model() -> LoadedModel:
    """Column 'a' is optional in the signature (required: false): it accepts missing values."""
    return LoadedModel(
        name="m",
        version="1",
        platform="test",
        flavour="test",
        layout=Layout.COLUMNS,
        inputs=(TensorMeta("a", "FP64", (-1,), optional=True), TensorMeta("b", "FP64", (-1,))),
        outputs=(TensorMeta("predict", "FP64", (-1,)),),
        predict=_predict,
        batch_dtype=np.dtype(np.float64),
    )


def raw(name, datatype, shape, values):
    return InputTensor(name, datatype, tuple(shape), np.asarray(values, dtype=np.float64))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_refused_naming_the_input(value):
    m = optional_model()
    inputs = [raw("a", "FP64", [1], [1.0]), raw("b", "FP64", [1], [value])]
    with pytest.raises(InvalidInputError, match="'b'"):
        assemble(m, inputs)
    with pytest.raises(InvalidInputError, match=r"'x'.*'b'"):
        assemble(m, [raw("x", "FP64", [1, 2], [1.0, value])])


def test_null_in_json_is_refused_unless_the_signature_allows_missing_values():
    m = optional_model()
    a = tensor("a", "FP64", [2], [None, 1.0])
    b = tensor("b", "FP64", [2], [1.0, None])
    with pytest.raises(InvalidInputError, match=r"input 'b'.*missing"):
        assemble(m, [a, b])
    ok = assemble(m, [a, tensor("b", "FP64", [2], [1.0, 2.0])])
    assert np.isnan(ok[0, 0])
    assert ok[1, 0] == 1.0
    left_out = assemble(m, [tensor("b", "FP64", [1], [2.0])])  # the whole column missing
    assert np.isnan(left_out[0, 0])
    matrix = assemble(m, [tensor("x", "FP64", [1, 2], [None, 2.0])])
    assert np.isnan(matrix[0, 0])
    # Infinity is never a missing value, even where missing values are accepted.
    with pytest.raises(InvalidInputError, match=r"input 'a'.*Inf"):
        assemble(m, [raw("a", "FP64", [1], [float("inf")]), raw("b", "FP64", [1], [1.0])])


def test_zero_rows_say_no_rows_not_a_datatype():
    for name, datatype in (("n", "INT64"), ("a", "FP64")):
        with pytest.raises(InvalidInputError, match=rf"input '{name}'.*no rows"):
            assemble(model(), [tensor(name, datatype, [0], [])])
    with pytest.raises(InvalidInputError, match=r"input 'x'.*no rows"):
        assemble(model(), [tensor("x", "FP64", [0, 2], [[]])])


@pytest.mark.parametrize("data", [[True], [1.0, True], [[1.0], [False]], [None, True]])
def test_booleans_are_not_numbers(data):
    shape = [len(data), 1] if isinstance(data[0], list) else [len(data)]
    with pytest.raises(InvalidInputError, match=r"input 'a'.*boolean"):
        json_array("a", "FP64", tuple(shape), data)
    with pytest.raises(InvalidInputError, match=r"input 'n'.*boolean"):
        json_array("n", "INT64", (1,), [True])
    with pytest.raises(InvalidInputError, match=r"input 'a'.*BOOL.*FP64"):
        assemble(model(), [tensor("a", "BOOL", [1], [True]), tensor("n", "INT64", [1], [1])])


@pytest.mark.parametrize(
    ("datatype", "shape", "data"),
    [
        ("FP64", [1], [[[[1.0]]]]),
        ("FP64", [1], [[1.0]]),
        ("FP64", [2, 1], [[1.0, 2.0]]),
        ("BYTES", [1], [[["a"]]]),
    ],
)
def test_over_nested_data_is_refused(datatype, shape, data):
    with pytest.raises(InvalidInputError, match=r"input 'a'.*nested"):
        json_array("a", datatype, tuple(shape), data)


def test_nested_data_that_matches_the_shape_is_accepted():
    flat = json_array("a", "FP64", (2, 2), [[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(flat, [1.0, 2.0, 3.0, 4.0])


def test_negative_lengths_get_a_clear_message():
    head = (
        b'{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32",'
        b'"parameters":{"binary_data_size":-8}}]}'
    )
    with pytest.raises(InvalidInputError, match=r"input 'x': binary_data_size.*non-negative.*-8"):
        parse_rest(head, len(head))
    with pytest.raises(
        InvalidInputError, match=r"Inference-Header-Content-Length.*non-negative.*-3"
    ):
        parse_rest(head, -3)


def test_json_nan_and_infinity_tokens_name_the_input():
    """Python's json.dumps writes NaN and Infinity: not JSON, but worth a precise answer."""
    m = optional_model()
    body = (
        b'{"inputs":[{"name":"a","shape":[1],"datatype":"FP64","data":[NaN]},'
        b'{"name":"b","shape":[1],"datatype":"FP64","data":[%s]}]}'
    )
    ok = parse_rest(body % b"1.5", None)
    assert np.isnan(assemble(m, ok.inputs)[0, 0])  # NaN where missing values are accepted
    for token in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
        request = parse_rest(body % token, None)
        with pytest.raises(InvalidInputError, match="input 'b'"):
            assemble(m, request.inputs)
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        parse_rest(b'{"inputs": [NaN', None)


# --------------------------------------------------------------------------- scikit-learn


def _sklearn_cases():
    import pandas as pd
    from sklearn.linear_model import LinearRegression, LogisticRegression

    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(40, 2)), columns=["a", "b"])
    y = (x.a > 0).astype(int)
    columns = (TensorMeta("a", "FP64", (-1,)), TensorMeta("b", "FP64", (-1,)))
    reordered = (TensorMeta("b", "FP64", (-1,)), TensorMeta("a", "FP64", (-1,)))
    tensor_in = (TensorMeta("input-0", "FP64", (-1, 2)),)
    matrix = x.to_numpy()
    return [
        # fitted on a frame, logged with a column signature
        (LogisticRegression().fit(x, y), columns, Layout.COLUMNS, True, matrix),
        # fitted on a NumPy matrix, logged with a column signature (inferred from a frame)
        (LogisticRegression().fit(matrix, y), columns, Layout.COLUMNS, True, matrix),
        (LinearRegression().fit(matrix, x.a), columns, Layout.COLUMNS, True, matrix),
        # fitted on a frame, logged with a tensor signature (infer_signature(x.to_numpy()))
        (LogisticRegression().fit(x, y), tensor_in, Layout.TENSOR, False, matrix),
        (LinearRegression().fit(x, x.a), tensor_in, Layout.TENSOR, False, matrix),
        # fitted on a frame, the signature's columns in another order
        (LogisticRegression().fit(x, y), reordered, Layout.COLUMNS, True, matrix[:, ::-1]),
    ]


def test_sklearn_models_predict_on_what_they_were_fitted_on():
    """No "X does not have valid feature names" (or its mirror) on a request: the predictor
    hands the estimator a frame with its own feature names, or the matrix it was fitted on."""
    import warnings

    from usina.serving.predictors import Inputs, build

    for native, metas, layout, frame, batch in _sklearn_cases():
        inputs = Inputs(metas, layout, frame, batch[:1])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            predictor = build(native, "sklearn", None, inputs, 1)
            outputs = predictor.predict(batch)
        column = "predict_proba" if "predict_proba" in outputs else "predict"
        expected = (
            native.predict_proba(_fitted_input(native, batch, metas))
            if column == "predict_proba"
            else native.predict(_fitted_input(native, batch, metas))
        )
        np.testing.assert_allclose(outputs[column], expected)


def _fitted_input(native, batch, metas):
    import pandas as pd

    names = getattr(native, "feature_names_in_", None)
    if names is None:
        return batch
    if len(metas) == 1:  # a tensor: its columns are the fitted features, in order
        return pd.DataFrame(batch, columns=list(names))
    return pd.DataFrame(batch, columns=[m.name for m in metas])[list(names)]


def test_values_beyond_a_float_datatype_are_refused_without_a_warning():
    """70000 does not fit FP16, 1e300 not FP32: the cast gives Inf (no RuntimeWarning, which
    the server would print per request, or raise as a 500 under -W error), refused by name."""
    fp16 = LoadedModel(
        name="m",
        version="1",
        platform="test",
        flavour="test",
        layout=Layout.TENSOR,
        inputs=(TensorMeta("t", "FP16", (-1, 2)),),
        outputs=(TensorMeta("predict", "FP64", (-1,)),),
        predict=_predict,
        batch_dtype=np.dtype(np.float16),
    )
    for datatype, value in (("FP16", 70000.0), ("FP32", 1e300), ("FP64", 1e300)):
        with pytest.raises(InvalidInputError, match=r"input 't'.*Inf"):
            assemble(fp16, [tensor("t", datatype, [1, 2], [value, 1.0])])
    with pytest.raises(InvalidInputError, match=r"input 't'.*Inf"):
        assemble(fp16, [tensor("t", "INT64", [1, 2], [2**40, 1])])
