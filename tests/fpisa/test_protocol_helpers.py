"""The header helpers of fpisa.protocol: message type bytes, field offsets,
pool index packing (scalar and vectorized), the workers' slot sequence."""

import numpy as np
import pytest

from fpisa.protocol import (
    DATA_VT,
    FIELD_OFFSETS,
    HEADER_BYTES,
    HEADER_DTYPE,
    RESULT_VT,
    RETX_VT,
    VERSION,
    Header,
    MsgType,
    WireMode,
    pack,
    pool_index,
    sequence_pool_index,
    split_pool_index,
    ver_type,
)


def test_message_type_bytes():
    assert [DATA_VT, RESULT_VT, RETX_VT] == [(VERSION << 4) | t for t in (0, 1, 2)]
    assert ver_type(MsgType.RESULT) == RESULT_VT


def test_field_offsets_locate_every_field_in_a_packed_header():
    h = Header(MsgType.RESULT, WireMode.FPISA_A, 2, 0x0B, 7, 5, 9, 3, pool_index(300, 1), -2, 0xA1B2C3D4)
    data = pack(h, np.zeros(3, np.uint16))
    assert sorted(FIELD_OFFSETS.values())[-1] + 4 == HEADER_BYTES
    assert data[FIELD_OFFSETS["ver_type"]] == RESULT_VT
    assert data[FIELD_OFFSETS["mode"]] == 1 and data[FIELD_OFFSETS["rank"]] == 5
    assert data[FIELD_OFFSETS["num_elements"]] == 3
    at = FIELD_OFFSETS["packet_id"]
    assert data[at:at + 4] == bytes.fromhex("A1B2C3D4")
    assert np.frombuffer(data[:HEADER_BYTES], HEADER_DTYPE)[0]["pool_index"] == 0x8000 | 300


def test_pool_index_scalar_and_vectorized_agree():
    slots, sets = np.arange(0, 0x8000, 97), np.arange(0, 0x8000, 97) % 2
    packed = pool_index(slots, sets)
    assert list(packed[:3]) == [pool_index(int(s), int(b)) for s, b in zip(slots[:3], sets[:3])]
    s, b = split_pool_index(packed)
    assert np.array_equal(s, slots) and np.array_equal(b, sets)
    assert split_pool_index(pool_index(5, 1)) == (5, 1)
    for bad in ((0x8000, 0), (-1, 0), (0, 2)):
        with pytest.raises(ValueError, match="slot"):
            pool_index(*bad)


def test_sequence_pool_index_is_switchmls_rule():
    g = np.arange(40)
    index = sequence_pool_index(g, 4)
    assert np.array_equal(index, [pool_index(int(k % 4), int((k // 4) % 2)) for k in g])
    assert sequence_pool_index(9, 4) == pool_index(1, 0)
    with pytest.raises(ValueError, match="window"):
        sequence_pool_index(0, 0)
