"""Runs a command, prints its wall time and peak RSS (children's ru_maxrss) as JSON."""
import json
import resource
import subprocess
import sys
import time

t0 = time.perf_counter()
out = subprocess.run(sys.argv[1:], capture_output=True, text=True)
seconds = time.perf_counter() - t0
rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
if out.returncode != 0:
    sys.stderr.write(out.stderr)
    sys.exit(out.returncode)
print(json.dumps({"seconds": seconds, "peak_rss_mb": rss_mb, "stdout": out.stdout.strip()[:400]}))
