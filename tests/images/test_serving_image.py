"""The serving image: ``usina serve`` on a model trained here, called with tritonclient."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.images.support import container, free_port, wait_http

TRAIN = """
import sys, warnings
warnings.simplefilter("ignore")
import numpy as np, mlflow.sklearn
from mlflow.models import infer_signature
from sklearn.linear_model import LinearRegression
rng = np.random.default_rng(0)
x = rng.normal(size=(200, 4))
y = x @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.25
model = LinearRegression().fit(x, y)
mlflow.sklearn.save_model(model, sys.argv[1], signature=infer_signature(x, model.predict(x)),
                          pip_requirements=["scikit-learn"])
"""


def test_the_serving_image_answers_tritonclient_over_rest_and_grpc(images, tmp_path: Path):
    model_dir = tmp_path / "model"
    trained = subprocess.run(
        [sys.executable, "-c", TRAIN, str(model_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert trained.returncode == 0, trained.stderr
    model_dir.chmod(0o755)
    http_port, grpc_port = free_port(), free_port()
    name = f"usina-test-serving-{os.getpid()}"
    with container(
        name,
        f"--volume={model_dir}:/models/linear:ro",
        images["serving"],
        "serve",
        "/models/linear",
        "--name=linear",
        "--host=127.0.0.1",
        f"--http-port={http_port}",
        f"--grpc-port={grpc_port}",
    ):
        wait_http(f"http://127.0.0.1:{http_port}/v2/health/ready", name)
        x = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 2.0, 1.0]])
        expected = x @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.25

        rest = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
        meta = rest.get_model_metadata("linear")
        (inp_meta,) = meta["inputs"]
        (out_meta,) = meta["outputs"]
        inp = httpclient.InferInput(inp_meta["name"], list(x.shape), inp_meta["datatype"])
        inp.set_data_from_numpy(x.astype(np.float64))
        result = rest.infer("linear", [inp])
        np.testing.assert_allclose(result.as_numpy(out_meta["name"]).ravel(), expected, atol=1e-6)
        rest.close()

        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        assert grpc.is_server_live()
        assert grpc.is_model_ready("linear")
        ginp = grpcclient.InferInput(inp_meta["name"], list(x.shape), inp_meta["datatype"])
        ginp.set_data_from_numpy(x.astype(np.float64))
        gresult = grpc.infer("linear", [ginp])
        np.testing.assert_allclose(gresult.as_numpy(out_meta["name"]).ravel(), expected, atol=1e-6)
        grpc.close()
