"""A stock Open Inference Protocol client (NVIDIA's tritonclient, HTTP) against `lambdaml serve`.

    python tests/clients/triton_infer.py 127.0.0.1:PORT MODEL ROWS_JSON

Checks liveness, readiness and metadata, then infers the rows twice: as one FP32 [N, F]
tensor in the binary tensor extension (tritonclient's default), and as one FP64 tensor per
feature named as the metadata says, in JSON. Prints what came back as one JSON object.
"""
import json
import sys

import numpy as np
import tritonclient.http as httpclient

url, model, rows = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
client = httpclient.InferenceServerClient(url=url)
assert client.is_server_live()
assert client.is_server_ready()
assert client.is_model_ready(model)
meta = client.get_model_metadata(model)
names = [i["name"] for i in meta["inputs"]]
x = np.array(rows, dtype=np.float32)

wide = httpclient.InferInput("input", list(x.shape), "FP32")
wide.set_data_from_numpy(x, binary_data=True)
binary = client.infer(
    model,
    [wide],
    outputs=[httpclient.InferRequestedOutput("probabilities"), httpclient.InferRequestedOutput("label")],
)

inputs = []
for i, name in enumerate(names):
    t = httpclient.InferInput(name, [x.shape[0]], "FP64")
    t.set_data_from_numpy(x[:, i].astype(np.float64), binary_data=False)
    inputs.append(t)
per_feature = client.infer(model, inputs, request_id="triton-1")

labels = binary.as_numpy("label").tolist()
print(json.dumps({
    "inputs": names,
    "binary": binary.as_numpy("probabilities")[:, 1].tolist(),
    "json": per_feature.as_numpy("probabilities")[:, 1].tolist(),
    "labels": [l.decode() if isinstance(l, bytes) else l for l in labels],
    "version": binary.get_response()["model_version"],
    "id": per_feature.get_response()["id"],
}))
