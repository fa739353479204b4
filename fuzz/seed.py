"""Seeds each fuzz target's corpus (fuzz/corpus/<target>/) from the project's own test
inputs: the 157 bad scoring requests, good requests of every form, the sample events, the
template, and small real data files (plain, gzip, Parquet). Run by fuzz/run.sh."""
import base64
import glob
import gzip
import hashlib
import json
import os
import struct
import sys

root = os.path.dirname(os.path.abspath(__file__))
repo = os.path.dirname(root)
corpus = os.path.join(root, "corpus")


def put(target, data):
    d = os.path.join(corpus, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


# Scoring requests: the first byte picks the form (0 V2 JSON, 1 V2 binary, 2 MLflow JSON,
# 3 CSV, 4 feedback); for binary the next two bytes are the JSON part's length.
for case in json.load(open(os.path.join(repo, "tests/corpus/score_bad_requests.json"))):
    body = case["body"].encode() if isinstance(case["body"], str) else json.dumps(case["body"]).encode()
    path, ct = case["path"], case.get("content_type") or ""
    if path.endswith("/feedback"):
        form = 4
    elif "/infer" in path:
        header = case.get("headers", {}).get("Inference-Header-Content-Length") or case.get("headers", {}).get("inference-header-content-length")
        if header is not None:
            n = int(header) if str(header).isdigit() else len(body)
            put("score_request", bytes([1]) + struct.pack("<H", min(n, 65535)) + body)
            continue
        form = 0
    elif "csv" in ct:
        form = 3
    else:
        form = 2
    put("score_request", bytes([form]) + body)
good = [
    (0, {"inputs": [{"name": "amount", "shape": [2], "datatype": "FP64", "data": [1.5, 80]},
                    {"name": "count", "shape": [2], "datatype": "INT64", "data": [1, 9]},
                    {"name": "member", "shape": [2], "datatype": "BOOL", "data": [True, False]},
                    {"name": "color", "shape": [2], "datatype": "BYTES", "data": ["red", "blue"]}]}),
    (2, {"dataframe_records": [{"amount": 1, "count": 2, "member": True, "color": "red"}]}),
    (2, {"dataframe_split": {"columns": ["amount", "count", "member", "color"], "data": [[1, 2, True, "green"]]}}),
    (2, {"instances": [[1, 2, True, "red"]]}),
    (2, {"inputs": {"amount": [1], "count": [2], "member": [True], "color": ["red"]}}),
    (4, {"request_id": "abc", "labels": ["1", 0]}),
    (4, {"feedback": [{"request_id": "abc", "row": 0, "label": "1"}]}),
]
for form, body in good:
    put("score_request", bytes([form]) + json.dumps(body).encode())
put("score_request", bytes([3]) + b"amount,count,member,color\n1.5,2,true,red\n,3,false,blue\n")
head = json.dumps({"inputs": [{"name": "amount", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 16}}]}).encode()
put("score_request", bytes([1]) + struct.pack("<H", len(head)) + head + struct.pack("<2d", 1.5, 2.5))
for case in [b'{"a": [1, 2, {"b": null}]}', b'[' * 200, b'{"dataframe_records": [{"a":1},{"a":1}]}']:
    put("json_budget", case)

for path in glob.glob(os.path.join(repo, "events/*.json")):
    put("lambda_event", open(path, "rb").read())

put("template", open(os.path.join(repo, "template.yaml"), "rb").read())

mixed = open(os.path.join(root, "fixtures/mixed.csv"), "rb").read()
small = b"\n".join(mixed.split(b"\n")[:40]) + b"\n"
put("ingest_file", small)
put("ingest_file", gzip.compress(small))
put("ingest_file", small.replace(b",", b";"))
put("ingest_file", small.replace(b"\n", b"\r\n"))
put("ingest_file", b"\xef\xbb\xbf" + small)
# A Parquet file as ingest writes it (fixtures/mixed.parquet: mixed.csv ingested).
put("ingest_file", open(os.path.join(root, "fixtures/mixed.parquet"), "rb").read())
print("seeded", ", ".join(f"{t}: {len(os.listdir(os.path.join(corpus, t)))}" for t in sorted(os.listdir(corpus))))
