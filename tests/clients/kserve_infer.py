"""The kserve Python SDK's REST client (InferenceRESTClient, Open Inference Protocol) against
`lambdaml serve`.

    python tests/clients/kserve_infer.py 127.0.0.1:PORT MODEL ROWS_JSON

Checks liveness and readiness, then infers the rows as one FP64 [N, F] tensor in JSON
(the SDK also names the model in the body, as `model_name`) and as one FP32 tensor in the
binary tensor extension (`set_data_from_numpy`'s default). Prints what came back as one
JSON object.
"""
import asyncio
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

url, model, rows = "http://" + sys.argv[1], sys.argv[2], json.loads(sys.argv[3])


async def main():
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    try:
        assert await client.is_server_live(url)
        assert await client.is_server_ready(url)
        assert await client.is_model_ready(url, model)
        x = np.array(rows, dtype=np.float64)
        tensor = InferInput("input", list(x.shape), "FP64", data=x.flatten().tolist())
        plain = await client.infer(
            url, InferRequest(model_name=model, infer_inputs=[tensor], request_id="kserve-1"), model_name=model
        )
        wide = InferInput("input", list(x.shape), "FP32")
        wide.set_data_from_numpy(x.astype(np.float32))
        binary = await client.infer(
            url, InferRequest(model_name=model, infer_inputs=[wide]), model_name=model
        )
        out = {}
        for name, response in [("json", plain), ("binary", binary)]:
            outputs = {o.name: o for o in response.outputs}
            probs = np.array(outputs["probabilities"].data, dtype=np.float64).reshape(
                outputs["probabilities"].shape
            )
            out[name] = probs[:, 1].tolist()
            out[name + "_labels"] = [str(l) for l in outputs["label"].data]
        out["id"] = plain.id
        out["model_name"] = plain.model_name
        print(json.dumps(out))
    finally:
        await client.close()


asyncio.run(main())
