"""Runs the real `kserve` InferenceRESTClient (V2 and V1) against Hearth's data plane.
Lives in its own venv (.venv-kserve): its pins clash with MLServer's. Prints JSON."""

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig


async def main(base_url, host, model):
    # A fresh dict per call: InferenceRESTClient.infer writes its binary header
    # (inference-header-content-length) into the dict it is given.
    def headers():
        return {"Host": host}

    out = {}
    v2 = InferenceRESTClient(RESTConfig(protocol="v2"))
    out["server_live"] = await v2.is_server_live(base_url, headers=headers())
    out["server_ready"] = await v2.is_server_ready(base_url, headers=headers())
    out["model_ready"] = await v2.is_model_ready(base_url, model, headers=headers())
    x = np.array([[6.8, 2.8, 4.8, 1.4], [5.1, 3.5, 1.4, 0.2]], dtype=np.float64)
    predictions = {}
    for binary in (True, False):
        inp = InferInput("input-0", list(x.shape), "FP64")
        inp.set_data_from_numpy(x, binary_data=binary)
        res = await v2.infer(base_url, InferRequest(model_name=model, infer_inputs=[inp]),
                             model_name=model, headers=headers())
        predictions["binary" if binary else "json"] = res.outputs[0].as_numpy().ravel().tolist()
        out["model_name"] = res.model_name
    out["v2"] = predictions
    await v2.close()
    v1 = InferenceRESTClient(RESTConfig(protocol="v1"))
    res = await v1.infer(base_url, {"instances": x.tolist()}, model_name=model, headers=headers())
    out["v1"] = res["predictions"]
    out["v1_model_ready"] = await v1.is_model_ready(base_url, model, headers=headers())
    await v1.close()
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
