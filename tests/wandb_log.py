"""Read back an offline W&B run's transaction log (`run-<id>.wandb`).

wandb 0.31 ships no Python reader for this file (its reader moved into the Go core), so this follows
the log's framing — a 7-byte header (":W&B", magic, version), then 32 KiB blocks of chunks, each with
a 7-byte header (CRC32C, length, type: full/first/middle/last) — and decodes every record with
wandb's own protobuf `Record`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32 * 1024
HEADER = struct.Struct("<4sHB")  # ident, magic, version
CHUNK = struct.Struct("<IHB")  # crc32c, length, type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    data = Path(path).read_bytes()
    ident, _, _ = HEADER.unpack_from(data)
    if ident != b":W&B":
        raise ValueError(f"{path}: not a W&B transaction log")
    pos, pending = HEADER.size, b""
    while pos + CHUNK.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK.size:  # the block's tail is padding
            pos += left
            continue
        _, length, kind = CHUNK.unpack_from(data, pos)
        pos += CHUNK.size
        if kind == 0 and length == 0:
            continue
        pending += data[pos : pos + length]
        pos += length
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def read_run(path: Path) -> dict:
    """{'group', 'job_type', 'name', 'tags', 'config' (key -> value), 'history' (key -> [values])}."""
    run = {"config": {}, "history": {}}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run |= {"group": r.run_group, "job_type": r.job_type, "name": r.display_name}
            run["tags"] = list(r.tags)
            run["config"] |= {i.key: json.loads(i.value_json) for i in r.config.update}
        elif kind == "config":
            run["config"] |= {i.key: json.loads(i.value_json) for i in record.config.update}
        elif kind == "history":
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                run["history"].setdefault(key, []).append(json.loads(item.value_json))
    return run
