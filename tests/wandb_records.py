"""A reader for W&B's offline run files (tests/test_trackers.py reads back what --report_to wandb logged)."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path


def read_wandb_records(path: Path) -> list:
    """The records of an offline `run-ID.wandb` file, decoded with wandb's own protobuf classes.

    wandb 0.31 has no Python reader (wandb-core writes the file); the container is a LevelDB log: a 7-byte
    header (":W&B", a 2-byte key, a version byte), then 32 KiB blocks of chunks, each `crc32 (4) | length (2,
    little-endian) | type (1: full, 2: first, 3: middle, 4: last) | data`, the CRC being zlib's over type + data."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # a block's zero-filled tail
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        assert len(chunk) == length and crc == zlib.crc32(bytes([kind]) + chunk), f"damaged chunk at byte {pos}"
        pos += 7 + length
        if kind == 1:
            records.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        else:
            assert kind == 4, kind
            records.append(pending + chunk)
    decoded = []
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        decoded.append(record)
    return decoded


def items(update) -> dict[str, object]:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in update}
