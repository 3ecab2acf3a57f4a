"""The two-level forwarding logic (hosts.mininet.leaf) in memory, no root:
two leaves and a spine (real SwitchPipelines) exchange packets through a
lossy in-memory network; workers' packets are built with fpisa.protocol.pack
(the one wire definition) and re-sent until answered, as the client does.
The result must equal fpisa.hierarchy's model with the recorded orders."""

import random

import numpy as np
import pytest

from emulator.pipeline import SwitchConfig, SwitchPipeline
from fpisa.job import JobSpec, mode_info
from fpisa.hierarchy import aggregate_hierarchical
from fpisa.protocol import Header, MsgType, WireMode, format_code, pack, pool_index, unpack
from hosts.mininet.leaf import LeafSwitch

E = 16  # elements per packet


class Port:
    """An address with an interface, like fpisa.net.EthEndpoint."""

    def __init__(self, interface, name):
        self.interface, self.name = interface, name

    def __repr__(self):
        return self.name


class Clock:
    """A clock the test advances: one retransmission round = one second."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def build(groups, mode, clock=None):
    K, L = sum(len(g) for g in groups), len(groups)
    workers = [Port(f"leaf{l}p{i}", f"w{g[i]}") for l, g in enumerate(groups) for i in range(len(g))]
    by_rank = {int(w.name[1:]): w for w in workers}
    leaf_up = [Port(f"spine-p{l}", f"leaf{l}") for l in range(L)]  # how the spine sees leaf l
    spine_port = [Port(f"leaf{l}up", "spine") for l in range(L)]  # how leaf l sees the spine
    job = JobSpec(mode=mode, packet_elements=E, window=4)
    spine = SwitchPipeline(SwitchConfig(job.replace(num_workers=L), tuple(leaf_up), record_orders=True))
    leaves = [LeafSwitch(SwitchPipeline(SwitchConfig(job.replace(num_workers=len(g)),
                                                     tuple(by_rank[r] for r in g), record_orders=True)),
                         leaf_index=l, num_leaves=L, global_ranks=g, total_workers=K,
                         spine=leaf_up[l], uplink_interface=f"leaf{l}up", clock=clock or Clock())
              for l, g in enumerate(groups)]
    return spine, leaves, by_rank, leaf_up, spine_port


def data_packet(rank, K, mode, values, packet_id):
    h = Header(MsgType.DATA, mode_info(mode).data_wire_mode, format_code("fp32"), 0, 0, rank, K, E,
               pool_index(packet_id % 4, (packet_id // 4) % 2), 0, packet_id)
    return pack(h, np.asarray(values, np.float32).view(np.uint32))  # bits, not a value cast


@pytest.mark.parametrize("mode", ["fpisa", "fpisa-a"])
@pytest.mark.parametrize("loss", [0.0, 0.3])
def test_two_level_in_memory_matches_hierarchical_model(mode, loss):
    groups = [[0, 1, 2], [3, 4]]
    K = 5
    clock = Clock()
    spine, leaves, by_rank, leaf_up, spine_port = build(groups, mode, clock)
    leaf_of = {r: l for l, g in enumerate(groups) for r in g}
    rng = np.random.default_rng(1)
    packets = 6
    values = (rng.standard_normal((K, packets * E)) * 10.0 ** rng.uniform(-3, 3, (K, packets * E))).astype(np.float32)
    drop = random.Random(7)
    results = {r: {} for r in range(K)}
    # one window of 4 slots; a packet is (re)sent until its worker has the result
    for start in range(0, packets, 4):
        batch = range(start, min(packets, start + 4))
        for attempt in range(200):
            clock.now += 1.0  # the workers' timers fired
            queue = [("leaf", leaf_of[r], by_rank[r], data_packet(r, K, mode, values[r, p * E:(p + 1) * E], p))
                     for p in batch for r in range(K) if p not in results[r]]
            if not queue:
                break
            while queue:
                where, index, source, packet = queue.pop(0)
                if drop.random() < loss:
                    continue
                if where == "leaf":
                    out = leaves[index].process(packet, source)
                else:
                    out = spine.process(packet, source)
                for dest, reply in out:
                    if where == "leaf" and dest is leaves[index].spine:  # leaf -> spine
                        queue.append(("spine", None, dest, reply))
                    elif where == "spine":  # spine -> leaf (dest is the leaf's endpoint)
                        l = leaf_up.index(dest)
                        queue.append(("leaf", l, spine_port[l], reply))
                    else:  # leaf -> worker
                        header, payload, _ = unpack(reply)
                        assert header.msg_type in (MsgType.RESULT, MsgType.RESULT_RETX)
                        assert header.num_workers == K and by_rank[header.rank] is dest
                        results[header.rank].setdefault(header.packet_id, payload.copy())
        else:
            raise AssertionError("no progress")
    got = [np.concatenate([results[r][p] for p in range(packets)]).view(np.uint32) for r in range(K)]
    for r in range(1, K):
        np.testing.assert_array_equal(got[r], got[0])
    leaf_orders = []
    for l, leaf in enumerate(leaves):
        orders = leaf.pipeline.recorded_orders()
        leaf_orders.append(np.repeat(np.array([orders[p] for p in range(packets)]), E, axis=0))
    spine_orders = spine.recorded_orders()
    spine_order = np.repeat(np.array([spine_orders[p] for p in range(packets)]), E, axis=0)
    expected = aggregate_hierarchical(values, mode, groups, leaf_orders=leaf_orders, spine_order=spine_order)
    np.testing.assert_array_equal(got[0], expected.view(np.uint32))
    if loss:
        assert sum(l.counters.up_resent + l.counters.down_retransmitted for l in leaves) > 0


def test_unknown_rank_is_counted_not_forwarded():
    spine, leaves, by_rank, leaf_up, _ = build([[0, 1], [2]], "fpisa")
    packet = data_packet(2, 3, "fpisa", np.zeros(E, np.float32), 0)  # rank 2 belongs to leaf 1
    assert leaves[0].process(packet, by_rank[0]) == []
    assert leaves[0].counters.unknown_rank == 1


def test_stale_spine_result_is_ignored():
    spine, leaves, by_rank, leaf_up, spine_port = build([[0], [1]], "fpisa")
    h = Header(MsgType.RESULT, WireMode.FPISA, 0, 0, 0, 0, 2, E, pool_index(0, 0), 0, 99)
    assert leaves[0].process(pack(h, np.zeros(E, np.uint32)), spine_port[0]) == []
    assert leaves[0].counters.stale_from_spine == 1


def test_duplicates_resend_the_partial_up_once_per_gap():
    clock = Clock()
    spine, leaves, by_rank, leaf_up, _ = build([[0, 1], [2]], "fpisa", clock)
    leaf = leaves[0]
    for r in (0, 1):
        out = leaf.process(data_packet(r, 3, "fpisa", np.ones(E, np.float32), 0), by_rank[r])
    assert [d for d, _ in out] == [leaf.spine] and leaf.counters.up_sent == 1
    # the spine's result is lost: both workers retransmit at about the same time
    clock.now += 0.02
    first = leaf.process(data_packet(0, 3, "fpisa", np.ones(E, np.float32), 0), by_rank[0])
    second = leaf.process(data_packet(1, 3, "fpisa", np.ones(E, np.float32), 0), by_rank[1])
    assert first == [(leaf.spine, out[0][1])] and second == []
    assert leaf.counters.up_resent == 1 and leaf.counters.up_resend_suppressed == 1
