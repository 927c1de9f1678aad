#!/usr/bin/env python3
"""Talks to a running `upsell serve` through the official KServe v2 client
(tritonclient[http]): health, metadata, and infer on the demo rows, whose
expected outputs come from `upsell score` (checkpoints/demo/expected.csv).

    pip install "tritonclient[http]"
    upsell serve --checkpoint checkpoints/demo --addr 127.0.0.1:18080 &
    python3 scripts/kserve-client-check.py 127.0.0.1:18080
"""
import csv
import sys
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient

root = Path(__file__).resolve().parent.parent
demo = root / "checkpoints" / "demo"
url = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8080"
client = httpclient.InferenceServerClient(url=url)

assert client.is_server_live(), "server not live"
assert client.is_server_ready(), "server not ready"
assert client.is_model_ready("upsell"), "model not ready"
metadata = client.get_model_metadata("upsell")
inputs_meta = {i["name"]: i["datatype"] for i in metadata["inputs"]}
products = metadata["parameters"]["products"]

with open(demo / "rows.csv") as f:
    rows = list(csv.DictReader(f))
with open(demo / "expected.csv") as f:
    expected = list(csv.DictReader(f))


def inputs_for(binary):
    """The demo rows as one tensor per input, as JSON or as binary data."""
    inputs = []
    for name, datatype in inputs_meta.items():
        values = [r[name] for r in rows]
        if datatype == "FP32" and binary:
            # Binary floats have no null: NaN is a missing value.
            array = np.array([[float(v) if v != "" else np.nan] for v in values], dtype=np.float32)
            tensor = httpclient.InferInput(name, list(array.shape), "FP32")
            tensor.set_data_from_numpy(array)
        elif datatype == "FP32" and "" not in values:
            array = np.array([[float(v)] for v in values], dtype=np.float32)
            tensor = httpclient.InferInput(name, list(array.shape), "FP32")
            tensor.set_data_from_numpy(array, binary_data=False)
        elif datatype == "FP32":
            # A missing value is JSON null, which numpy cannot hold in a float
            # array: give the client the list it would have built, with None.
            tensor = httpclient.InferInput(name, [len(values), 1], "FP32")
            tensor._data = [float(v) if v != "" else None for v in values]
        else:
            array = np.array([[v.encode()] for v in values], dtype=object)
            tensor = httpclient.InferInput(name, list(array.shape), "BYTES")
            tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs


def worst_difference(result):
    p_convert = result.as_numpy("p_convert")
    p_plan = result.as_numpy("p_plan")
    worst = 0.0
    for row, want in enumerate(expected):
        for k, product in enumerate(products):
            worst = max(worst, abs(p_convert[row][k] - float(want[f"p_convert__{product}"])))
            worst = max(worst, abs(p_plan[row][k] - float(want[f"p_plan__{product}"])))
    return worst


# JSON tensors and outputs, then the client's defaults: binary tensor data
# both ways (inputs set from numpy, and no outputs named, which asks for
# every output as binary data).
json_outputs = [
    httpclient.InferRequestedOutput("p_convert", binary_data=False),
    httpclient.InferRequestedOutput("p_plan", binary_data=False),
]
by_json = worst_difference(client.infer("upsell", inputs_for(False), outputs=json_outputs))
by_binary = worst_difference(client.infer("upsell", inputs_for(True)))
for how, worst in (("JSON", by_json), ("binary", by_binary)):
    assert worst < 1e-5, f"{how}: scores differ from upsell score by {worst}"
print(f"tritonclient: live, ready, metadata ({len(inputs_meta)} inputs), infer on {len(rows)} rows "
      f"as JSON and as binary data; largest difference from `upsell score`: "
      f"{by_json:.2e} (JSON), {by_binary:.2e} (binary)")
