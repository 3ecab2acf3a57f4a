"""Write and read classic pcap files (Ethernet), as simple_switch --use-files needs."""

from __future__ import annotations

import struct
from pathlib import Path

__all__ = ["write_pcap", "read_pcap", "read_pcap_records"]

_MAGIC = 0xA1B2C3D4
_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_LINKTYPE_ETHERNET = 1


def write_pcap(path: Path, frames: list[bytes], start_us: int = 0, gap_us: int = 1000) -> None:
    """``frames`` in order, ``gap_us`` apart."""
    with open(path, "wb") as f:
        f.write(_GLOBAL.pack(_MAGIC, 2, 4, 0, 0, 65535, _LINKTYPE_ETHERNET))
        for i, frame in enumerate(frames):
            t = start_us + i * gap_us
            f.write(_RECORD.pack(t // 1_000_000, t % 1_000_000, len(frame), len(frame)))
            f.write(frame)


def read_pcap(path: Path) -> list[bytes]:
    """Frames of a pcap file; a file cut short mid-record (still being
    written) yields the complete records only."""
    return [frame for _, frame in read_pcap_records(path)]


def read_pcap_records(path: Path) -> list[tuple[float, bytes]]:
    """(timestamp in seconds, frame) of every complete record of a pcap file
    (simple_switch stamps an output frame with the time it writes it)."""
    data = Path(path).read_bytes()
    if len(data) < _GLOBAL.size:
        return []
    magic = struct.unpack_from("<I", data)[0]
    if magic in (_MAGIC, 0xA1B23C4D):
        endian = "<"
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a pcap file (magic 0x{magic:08x})")
    record = struct.Struct(endian + "IIII")
    records, offset = [], _GLOBAL.size
    while offset + record.size <= len(data):
        seconds, micros, caplen, _ = record.unpack_from(data, offset)
        offset += record.size
        if offset + caplen > len(data):
            break
        records.append((seconds + micros / 1e6, data[offset:offset + caplen]))
        offset += caplen
    return records
