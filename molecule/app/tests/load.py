"""Load generator run inside the container: GET a URL from a few threads until a stop
file exists (and at least --min requests were made); prints a JSON summary."""

import argparse
import collections
import json
import os
import threading
import time
import urllib.request

parser = argparse.ArgumentParser()
parser.add_argument("--url", default="http://127.0.0.1:8000/version")
parser.add_argument("--stop-file", required=True)
parser.add_argument("--min", type=int, default=200)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--max-seconds", type=float, default=240)
args = parser.parse_args()

lock = threading.Lock()
stats = {"ok": 0, "failed": 0, "errors": [], "versions": collections.Counter(), "pids": set(), "sequence": []}
start = time.monotonic()


def done():
    elapsed = time.monotonic() - start
    return elapsed > args.max_seconds or (os.path.exists(args.stop_file) and stats["ok"] + stats["failed"] >= args.min)


def worker():
    while not done():
        try:
            with urllib.request.urlopen(args.url, timeout=30) as response:
                body = json.load(response)
            with lock:
                stats["ok"] += 1
                stats["versions"][body.get("version")] += 1
                stats["pids"].add(body.get("pid"))
                if not stats["sequence"] or stats["sequence"][-1] != body.get("version"):
                    stats["sequence"].append(body.get("version"))
        except Exception as err:  # noqa: BLE001 - every failure counts
            with lock:
                stats["failed"] += 1
                stats["errors"].append(repr(err)[:200])
        time.sleep(0.005)


threads = [threading.Thread(target=worker) for _ in range(args.threads)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps({
    "ok": stats["ok"], "failed": stats["failed"], "errors": stats["errors"][:10],
    "versions": dict(stats["versions"]), "pids": sorted(p for p in stats["pids"] if p),
    "sequence": stats["sequence"], "seconds": round(time.monotonic() - start, 1),
}))
