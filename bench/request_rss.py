#!/usr/bin/env python3
"""Peak RSS of `lambdaml serve` while it answers one request of each form, each up to the
body limit (6 MB): a fresh server per request, VmHWM read from /proc after the answer.

    bench/request_rss.py BIN STORE      (a store holding the breast-cancer model; see
                                         bench/soak.sh for how one is trained)

Prints one JSON line per request: form, body bytes, status, peak RSS in MB.
"""

import csv
import http.client
import json
import os
import subprocess
import sys
import time

LIMIT = 6 * 1024 * 1024
ADDR = ("127.0.0.1", 18091)


def rows():
    with open(os.path.join(os.path.dirname(__file__), "..", "data", "sklearn_breast_cancer.csv")) as f:
        r = csv.reader(f)
        header = next(r)
        label = header.index("target") if "target" in header else len(header) - 1
        names = [h for i, h in enumerate(header) if i != label]
        data = [[float(v) for i, v in enumerate(row) if i != label] for row in r]
    return names, data


def fill(make, limit=LIMIT, max_rows=10_000):
    """The largest body `make(n)` under the limit with n <= max_rows, by bisection on n."""
    lo, hi = 1, 1
    while len(make(hi)) <= limit:
        if hi >= max_rows:
            return make(max_rows), max_rows
        lo, hi = hi, min(hi * 2, max_rows + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if len(make(mid)) <= limit:
            lo = mid
        else:
            hi = mid
    return make(lo), lo


def bodies():
    names, data = rows()
    pick = lambda n: [data[i % len(data)] for i in range(n)]
    out = []
    records = lambda n: json.dumps({"dataframe_records": [dict(zip(names, r)) for r in pick(n)]}).encode()
    split = lambda n: json.dumps({"dataframe_split": {"columns": names, "data": pick(n)}}).encode()
    instances = lambda n: json.dumps({"instances": pick(n)}).encode()
    v2 = lambda n: json.dumps({"inputs": [{"name": "input", "shape": [n, len(names)], "datatype": "FP64",
                                           "data": [x for r in pick(n) for x in r]}]}).encode()
    csvb = lambda n: (",".join(names) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in pick(n))).encode()
    for form, make, path, ctype in [
        ("dataframe_records", records, "/invocations", "application/json"),
        ("dataframe_split", split, "/invocations", "application/json"),
        ("instances (rows)", instances, "/invocations", "application/json"),
        ("V2 JSON [N, 30]", v2, "/v2/models/breast-cancer/infer", "application/json"),
        ("text/csv", csvb, "/invocations", "text/csv"),
    ]:
        body, n = fill(make)
        out.append((f"{form}, {n} rows", path, ctype, body))
        if n == 10_000:
            # The whole body limit, past the row limit: refused, at what cost.
            body, n = fill(make, max_rows=10**9)
            out.append((f"{form}, {n} rows (over --max-rows)", path, ctype, body))
    tiny = b'{"dataframe_records": [' + b",".join([b'{"a":1}'] * 700_000) + b"]}"
    out.append(("hostile: 700,000 {\"a\":1} records", "/invocations", "application/json", tiny))
    keys = b'{"dataframe_records": [{' + b",".join(b'"k%d":1' % i for i in range(400_000)) + b"}]}"
    out.append(("hostile: one record of 400,000 distinct unknown keys", "/invocations", "application/json", keys[:LIMIT]))
    return out


def serve(binary, store):
    p = subprocess.Popen([binary, "--store", f"file://{store}", "serve", "--addr", f"{ADDR[0]}:{ADDR[1]}",
                          "--model", "breast-cancer", "--max-rows", "10000"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(400):
        try:
            c = http.client.HTTPConnection(*ADDR, timeout=1)
            c.request("GET", "/v2/health/ready")
            if c.getresponse().status == 200:
                return p
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise SystemExit("the server did not start")


def hwm(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    binary, store = sys.argv[1], sys.argv[2]
    for form, path, ctype, body in bodies():
        p = serve(binary, store)
        try:
            idle = hwm(p.pid)
            c = http.client.HTTPConnection(*ADDR, timeout=120)
            c.request("POST", path, body=body, headers={"Content-Type": ctype})
            r = c.getresponse()
            r.read()
            print(json.dumps({"form": form, "bytes": len(body), "status": r.status,
                              "idle_mb": round(idle, 1), "peak_mb": round(hwm(p.pid), 1)}), flush=True)
        finally:
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
