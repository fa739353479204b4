#!/usr/bin/env python3
"""Generates score_bad_requests.json: malformed scoring requests and the answer each must get.

The requests target the `mixed` test model (tests/lib.rs: MIXED_SPEC): inputs amount (float),
count (integer), member (boolean), color (categorical: red, green, blue; unseen is an error),
unknown features rejected. The test server allows 100 rows and 64 KiB per request.
Every case says the status it must get and, where one field is to blame, that field; the
test (tests/e2e/score.rs) checks both and that the body is the JSON error shape.

    python3 tests/corpus/gen_bad_requests.py > tests/corpus/score_bad_requests.json
"""
import json

GOOD = {"amount": 12.5, "count": 3, "member": True, "color": "red"}
COLS = list(GOOD)
V2_TYPES = {"amount": "FP64", "count": "INT64", "member": "BOOL", "color": "BYTES"}
cases = []


def case(name, path, body, status, field=None, content_type="application/json", method="POST", headers=None, pad=None):
    """`pad`: (text, times) appended to the body by the test, for bodies over the limit."""
    if not isinstance(body, str):
        body = json.dumps(body)
    c = {"name": name, "method": method, "path": path, "content_type": content_type,
         "headers": headers or {}, "body": body, "status": status, "field": field}
    if pad:
        c["pad"] = {"text": pad[0], "times": pad[1]}
    cases.append(c)


def v2_body(row):
    return {"inputs": [{"name": k, "shape": [1], "datatype": V2_TYPES.get(k, "FP64"), "data": [v]}
                       for k, v in row.items()]}


FORMS = {
    "v2": ("/v2/models/mixed/infer", v2_body),
    "split": ("/invocations", lambda r: {"dataframe_split": {"columns": list(r), "data": [list(r.values())]}}),
    "records": ("/invocations", lambda r: {"dataframe_records": [r]}),
    "instances": ("/invocations", lambda r: {"instances": [r]}),
    "inputs_columns": ("/invocations", lambda r: {"inputs": {k: [v] for k, v in r.items()}}),
}


def variant(**changes):
    row = dict(GOOD)
    for k, v in changes.items():
        if v is DROP:
            row.pop(k)
        else:
            row[k] = v
    return row


DROP = object()
FAULTS = [
    ("missing feature", variant(count=DROP), 422, "count"),
    ("unknown feature", {**GOOD, "colour": "red"}, 422, "colour"),
    ("text for a number", variant(amount="abc"), 422, "amount"),
    ("NaN", variant(amount="NaN"), 422, "amount"),
    ("infinity", variant(amount="Infinity"), 422, "amount"),
    ("negative infinity", variant(count="-inf"), 422, "count"),
    ("unseen category", variant(color="purple"), 422, "color"),
    ("not a boolean", variant(member="maybe"), 422, "member"),
    ("array for a value", variant(amount=[1, 2]), 422, "amount"),
    ("object for a value", variant(color={"name": "red"}), 422, "color"),
]
for form, (path, make) in FORMS.items():
    for fault, row, status, field in FAULTS:
        body = make(row)
        if form == "v2" and fault == "text for a number":
            pass
        if form == "v2" and fault in ("array for a value",):
            # A nested array is a shape error in a tensor.
            status_v2, field_v2 = 400, "amount"
            case(f"{form}: {fault}", path, body, status_v2, field_v2)
            continue
        if form == "v2" and fault == "object for a value":
            case(f"{form}: {fault}", path, body, 422, "color")
            continue
        case(f"{form}: {fault}", path, body, status, field)
    # Too many rows (the test server allows 100).
    many = {k: [v] * 101 for k, v in GOOD.items()}
    if form == "v2":
        body = {"inputs": [{"name": k, "shape": [101], "datatype": V2_TYPES[k], "data": v} for k, v in many.items()]}
    elif form == "split":
        body = {"dataframe_split": {"columns": COLS, "data": [list(GOOD.values())] * 101}}
    elif form in ("records", "instances"):
        key = "dataframe_records" if form == "records" else "instances"
        body = {key: [GOOD] * 101}
    else:
        body = {"inputs": many}
    case(f"{form}: too many rows", path, body, 413)
    case(f"{form}: truncated JSON", path, json.dumps(make(GOOD))[:-3], 400)
    case(f"{form}: wrong content type", path, make(GOOD), 415, content_type="text/plain")
    case(f"{form}: empty body", path, "", 400)
    case(f"{form}: body over the limit", path, make(GOOD), 413, pad=(" ", 70 * 1024))
    case(f"{form}: not an object", path, [1, 2, 3], 400)

# CSV.
header = ",".join(COLS)
good_line = "12.5,3,true,red"
case("csv: missing column", "/invocations", "amount,member,color\n12.5,true,red\n", 422, "count", "text/csv")
case("csv: unknown column", "/invocations", header + ",colour\n" + good_line + ",red\n", 422, "colour", "text/csv")
case("csv: text for a number", "/invocations", header + "\nabc,3,true,red\n", 422, "amount", "text/csv")
case("csv: nan", "/invocations", header + "\nnan,3,true,red\n", 422, "amount", "text/csv")
case("csv: inf", "/invocations", header + "\ninf,3,true,red\n", 422, "amount", "text/csv")
case("csv: unseen category", "/invocations", header + "\n12.5,3,true,purple\n", 422, "color", "text/csv")
case("csv: not a boolean", "/invocations", header + "\n12.5,3,maybe,red\n", 422, "member", "text/csv")
case("csv: ragged row", "/invocations", header + "\n12.5,3,true\n", 400, None, "text/csv")
case("csv: header only", "/invocations", header + "\n", 400, None, "text/csv")
case("csv: empty", "/invocations", "", 400, None, "text/csv")
case("csv: duplicate column", "/invocations", "amount,amount,count,member,color\n1,2,3,true,red\n", 422, "amount", "text/csv")
case("csv: too many rows", "/invocations", header + "\n", 413, None, "text/csv", pad=(good_line + "\n", 101))
case("csv: over the limit", "/invocations", header + "\n", 413, None, "text/csv", pad=(good_line + "\n", 5000))
case("csv: second row bad", "/invocations", header + "\n" + good_line + "\n1,2,true,mauve\n", 422, "color", "text/csv")

# MLflow body shapes.
M = "/invocations"
case("mlflow: no known key", M, {"data": [GOOD]}, 400, "data")
case("mlflow: two keys", M, {"instances": [GOOD], "inputs": [GOOD]}, 400)
case("mlflow: no key", M, {}, 400)
case("mlflow: split without data", M, {"dataframe_split": {"columns": COLS}}, 400, "dataframe_split.data")
case("mlflow: split without columns", M, {"dataframe_split": {"data": [[1, 2, True, "red"]]}}, 400, "dataframe_split.columns")
case("mlflow: split columns not strings", M, {"dataframe_split": {"columns": [1, 2, 3, 4], "data": [[1, 2, True, "red"]]}}, 400, "dataframe_split.columns")
case("mlflow: split row too short", M, {"dataframe_split": {"columns": COLS, "data": [[1, 2, True]]}}, 422)
case("mlflow: split row not an array", M, {"dataframe_split": {"columns": COLS, "data": [GOOD]}}, 422)
case("mlflow: split unknown key", M, {"dataframe_split": {"columns": COLS, "data": [[1, 2, True, "red"]], "dtypes": []}}, 400, "dataframe_split.dtypes")
case("mlflow: split is a list", M, {"dataframe_split": [[1, 2, True, "red"]]}, 400, "dataframe_split")
case("mlflow: records not a list", M, {"dataframe_records": GOOD}, 400, "dataframe_records")
case("mlflow: record not an object", M, {"dataframe_records": [GOOD, [1, 2, 3, 4]]}, 422, "dataframe_records")
case("mlflow: instances positional too short", M, {"instances": [[12.5, 3, True]]}, 422, "instances")
case("mlflow: instances scalars", M, {"instances": [1, 2, 3]}, 400, "instances")
case("mlflow: instances empty", M, {"instances": []}, 400, "instances")
case("mlflow: inputs columns of different lengths", M, {"inputs": {"amount": [1, 2], "count": [1], "member": [True], "color": ["red"]}}, 400)
case("mlflow: inputs a string", M, {"inputs": "12.5,3,true,red"}, 400, "inputs")
case("mlflow: second record bad", M, {"dataframe_records": [GOOD, variant(color="mauve")]}, 422, "color")
case("mlflow: duplicate column in split", M, {"dataframe_split": {"columns": COLS + ["amount"], "data": [[1, 2, True, "red", 1]]}}, 422, "amount")
case("mlflow: JSON with NaN literal", M, '{"dataframe_records": [{"amount": NaN, "count": 3, "member": true, "color": "red"}]}', 400)
case("mlflow: unknown version", M + "?version=nope", {"instances": [GOOD]}, 404)
case("mlflow: unknown model", M + "?model=no-such-model", {"instances": [GOOD]}, 404)
case("mlflow: bad model name", M + "?model=..%2Fsecrets", {"instances": [GOOD]}, 404)

# Open Inference Protocol request shapes.
V = "/v2/models/mixed/infer"
good_inputs = v2_body(GOOD)["inputs"]
case("v2: no inputs", V, {"id": "x"}, 400, "inputs")
case("v2: inputs not a list", V, {"inputs": {"amount": 1}}, 400, "inputs")
case("v2: inputs empty", V, {"inputs": []}, 400, "inputs")
case("v2: tensor without name", V, {"inputs": [{"shape": [1], "datatype": "FP64", "data": [1]}]}, 400, "inputs[0].name")
case("v2: tensor without datatype", V, {"inputs": [{"name": "amount", "shape": [1], "data": [1]}]}, 400, "amount")
case("v2: FP16", V, {"inputs": [dict(good_inputs[0], datatype="FP16")] + good_inputs[1:]}, 400, "amount")
case("v2: unknown datatype", V, {"inputs": [dict(good_inputs[0], datatype="FLOAT")] + good_inputs[1:]}, 400, "amount")
case("v2: shape and data disagree", V, {"inputs": [dict(good_inputs[0], shape=[2])] + good_inputs[1:]}, 400, "amount")
case("v2: negative shape", V, {"inputs": [dict(good_inputs[0], shape=[-1])] + good_inputs[1:]}, 400, "amount")
case("v2: 3-D shape", V, {"inputs": [dict(good_inputs[0], shape=[1, 1, 1])] + good_inputs[1:]}, 400, "amount")
case("v2: no data", V, {"inputs": [{"name": "amount", "shape": [1], "datatype": "FP64"}] + good_inputs[1:]}, 400, "amount")
case("v2: unknown tensor key", V, {"inputs": [dict(good_inputs[0], format="x")] + good_inputs[1:]}, 400, "amount.format")
case("v2: tensors with different rows", V, {"inputs": [dict(good_inputs[0], shape=[2], data=[1, 2])] + good_inputs[1:]}, 400)
case("v2: unknown output", V, {"inputs": good_inputs, "outputs": [{"name": "logits"}]}, 400, "outputs[0].name")
case("v2: outputs not a list", V, {"inputs": good_inputs, "outputs": "label"}, 400, "outputs")
case("v2: id not a string", V, {"id": 5, "inputs": good_inputs}, 400, "id")
case("v2: unknown top key", V, {"inputs": good_inputs, "model": "mixed"}, 400, "model")
case("v2: text in BOOL", V, {"inputs": good_inputs[:2] + [dict(good_inputs[2], data=["yes"])] + good_inputs[3:]}, 422, "member")
case("v2: number in BYTES", V, {"inputs": good_inputs[:3] + [dict(good_inputs[3], data=[3])]}, 422, "color")
case("v2: tensor twice", V, {"inputs": good_inputs + [good_inputs[0]]}, 422, "amount")
case("v2: wide tensor of the wrong width", V, {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}, 422, "input")
case("v2: 2-D feature tensor", V, {"inputs": [dict(good_inputs[0], shape=[1, 2], data=[1, 2])] + good_inputs[1:]}, 422, "amount")
bin_json = json.dumps({"inputs": [dict({k: v for k, v in good_inputs[0].items() if k != "data"}, parameters={"binary_data_size": 8})] + good_inputs[1:]})
case("v2: binary header longer than the body", V, bin_json, 400, None, "application/octet-stream", headers={"Inference-Header-Content-Length": str(len(bin_json) + 50)})
case("v2: binary size beyond the data", V, bin_json, 400, "amount", "application/octet-stream", headers={"Inference-Header-Content-Length": str(len(bin_json))})
case("v2: binary header not a number", V, bin_json, 400, None, "application/octet-stream", headers={"Inference-Header-Content-Length": "lots"})
case("v2: binary and data both", V, {"inputs": [dict(good_inputs[0], parameters={"binary_data_size": 8})] + good_inputs[1:]}, 400, "amount")
case("v2: unknown model", "/v2/models/nope/infer", v2_body(GOOD), 404)
case("v2: unknown version", "/v2/models/mixed/versions/0000/infer", v2_body(GOOD), 404)
case("v2: bad model name", "/v2/models/.hidden/infer", v2_body(GOOD), 404)
case("v2: GET on infer", V, "", 405, method="GET", content_type=None)
case("v2: unknown route", "/v2/models/mixed/predict", v2_body(GOOD), 404)
case("v2: metadata of an unknown model", "/v2/models/nope", "", 404, method="GET", content_type=None)

# Feedback.
F = "/v2/models/mixed/feedback"
case("feedback: unknown class", F, {"request_id": "abc", "label": "2"}, 422, "label")
case("feedback: no request id", F, {"label": "1"}, 422, "request_id")
case("feedback: no label", F, {"request_id": "abc"}, 400, "label")
case("feedback: not JSON", F, "request_id=abc&label=1", 400, None, "application/json")
case("feedback: wrong content type", F, {"request_id": "abc", "label": "1"}, 415, None, "text/csv")
case("feedback: feedback not a list", F, {"feedback": {"request_id": "abc"}}, 400, "feedback")
case("feedback: bad row", F, {"feedback": [{"request_id": "abc", "row": -1, "label": "1"}]}, 422, "row")
case("feedback: unknown model", "/v2/models/nope/feedback", {"request_id": "abc", "label": "1"}, 404)

json.dump(cases, __import__("sys").stdout, indent=1)
print()
