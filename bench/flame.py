"""Summarise py-spy collapsed stacks (`py-spy record --format raw`): the share of samples
whose stack passes through each of a few named layers, and the top leaf functions.

    python bench/flame.py PROFILE.txt [--top 15]
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

# A sample counts for the first layer whose marker appears in its stack.
LAYERS = [
    ("database (psycopg)", "psycopg"),
    ("validation (pydantic)", "pydantic"),
    ("inbound reading (received_json)", "received_json"),
    ("gzip (inflate)", "tlsrpt/inflate"),
    ("tally (app.tlsrpt)", "app/tlsrpt/"),
    ("inbound route", "app/api/inbound.py"),
    ("inbound service", "app/inbound/"),
    ("ingest route/service", "app/api/ingest.py"),
    ("ingest service", "app/ingest/"),
    ("uvicorn/httptools", "uvicorn"),
    ("starlette/fastapi", "starlette"),
    ("fastapi", "fastapi"),
    ("asyncio/uvloop", "asyncio"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    layers: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in args.profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        if "idle" in frames[-1] or frames[-1].startswith("select") or "epoll" in frames[-1]:
            layers["idle (waiting)"] += n
        else:
            layers[next((name for name, mark in LAYERS if mark in stack), "other")] += n
        leaves[frames[-1]] += n
    print(f"{total} samples")
    for name, n in layers.most_common():
        print(f"{n * 100 / total:5.1f} %  {name}")
    print("top leaf frames:")
    for name, n in leaves.most_common(args.top):
        print(f"{n * 100 / total:5.1f} %  {name}")


if __name__ == "__main__":
    main()
