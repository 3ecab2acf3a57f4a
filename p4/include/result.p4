// Result addressing. Ingress turns the packet that completes a row (or asks
// for a completed row again) into the result: message type, flags, lengths,
// the switch's address as source. A completed row goes to the job's
// multicast group (one replica per worker, egress_rid = rank); egress writes
// each replica's destination from the worker address table. A
// retransmission goes back to the asker only.
#ifndef FPISA_RESULT_P4
#define FPISA_RESULT_P4

#include "headers.p4"
#include "generated/raw_headers.p4"

// switch_counter: what happened to each packet, indexed by the C_*
// constants (p4/__init__.py SWITCH_COUNTERS); drop_counter 0 = not dropped.
control CountOutcome(in metadata_t meta) {
    counter(NUM_SWITCH_COUNTERS, CounterType.packets) switch_counter;

    apply {
        switch_counter.count(C_RECEIVED);
        if (meta.drop_counter != 0) {
            switch_counter.count(meta.drop_counter);
        } else {
            if (meta.update) {
                switch_counter.count(C_AGGREGATED);
            }
            if (meta.readout) {
                if (meta.retransmit) {
                    switch_counter.count(C_RESULTS_RETRANSMITTED);
                } else {
                    switch_counter.count(C_RESULTS_MULTICAST);
                }
            }
        }
    }
}

// Before the lanes run: does the result carry the raw registers? The
// completing packet decides (FLAG_RAW, or the job's raw_registers setting)
// and a retransmission repeats that choice, so a RESULT_RETX is the same
// packet as the RESULT. The raw-register headers must be valid before the
// lanes write them (setValid may clear a header's fields).
control PrepareRawRegisters(inout headers_t hdr, inout metadata_t meta)(bool float_modes) {
    register<bit<1>>(POOL_ROWS) result_has_raw;
    SetRawHeadersValid() set_valid;

    apply {
        meta.want_raw = false;
        if (float_modes) {  // a constructor argument: no BMv2 node
            // straight-line: read and written back, the value read unless
            // this packet completes the row
            bit<1> has_raw;
            result_has_raw.read(has_raw, meta.row);
            has_raw = SEL(1, !meta.readout || meta.retransmit, has_raw,
                          (bit<1>)(meta.job_raw_registers == 1 || (hdr.agg.flags & FLAG_RAW) != 0));
            result_has_raw.write(meta.row, has_raw);
            meta.want_raw = meta.readout && has_raw == 1;
        }
        if (meta.want_raw) {
            set_valid.apply(hdr);
        }
    }
}

control ResultHeader(inout headers_t hdr, inout metadata_t meta,
                     inout standard_metadata_t standard_metadata) {
    apply {
        // straight-line (one BMv2 action): a retransmission goes back to the
        // asker only, a completed row to the job's multicast group
        hdr.agg.msg_type = SEL(4, meta.retransmit, MSG_RESULT_RETX, MSG_RESULT);
        hdr.agg.flags = meta.row_flags | (FLAG_RAW & MASK(8, meta.want_raw));
        hdr.udp.length = DATA_UDP_LENGTH + (RAW_BYTES & MASK(16, meta.want_raw));
        hdr.udp.checksum = 0;
        hdr.ipv4.total_len = hdr.udp.length + 20;  // (no local: one metadata field less)

        // the switch answers from the address the workers sent to
        bit<48> switch_mac = hdr.ethernet.dst_addr;
        bit<32> switch_ip = hdr.ipv4.dst_addr;
        hdr.ethernet.dst_addr = SEL(48, meta.retransmit, hdr.ethernet.src_addr, hdr.ethernet.dst_addr);
        hdr.ipv4.dst_addr = SEL(32, meta.retransmit, hdr.ipv4.src_addr, hdr.ipv4.dst_addr);
        hdr.udp.dst_port = SEL(16, meta.retransmit, hdr.udp.src_port, hdr.udp.dst_port);
        standard_metadata.egress_spec = SEL(9, meta.retransmit, standard_metadata.ingress_port,
                                            standard_metadata.egress_spec);
        standard_metadata.mcast_grp = SEL(16, meta.retransmit, standard_metadata.mcast_grp,
                                          meta.job_mcast_grp);
        meta.is_multicast = !meta.retransmit;
        hdr.ethernet.src_addr = switch_mac;
        hdr.ipv4.src_addr = switch_ip;
        hdr.udp.src_port = FPISA_UDP_PORT;
    }
}

control ResultEgress(inout headers_t hdr, inout metadata_t meta,
                     inout standard_metadata_t standard_metadata) {
    // egress's own array (an extern belongs to one control); only
    // C_DROP_NO_WORKER_ADDRESS is counted here
    counter(NUM_SWITCH_COUNTERS, CounterType.packets) egress_counter;
    bool address_known = false;

    action set_worker_address(bit<48> mac, bit<32> ip, bit<16> udp_port) {
        address_known = true;
        hdr.ethernet.dst_addr = mac;
        hdr.ipv4.dst_addr = ip;
        hdr.udp.dst_port = udp_port;
    }
    action no_address() { address_known = false; }
    table worker_address {
        key = {
            hdr.agg.job : exact;
            standard_metadata.egress_rid : exact;
        }
        actions = { set_worker_address; no_address; }
        default_action = no_address();
        size = 4096;
    }

    apply {
        if (meta.is_multicast) {
            worker_address.apply();
            if (address_known) {
                // each replica names its destination rank
                hdr.agg.rank = (bit<8>)standard_metadata.egress_rid;
            } else {
                egress_counter.count(C_DROP_NO_WORKER_ADDRESS);
                mark_to_drop(standard_metadata);
            }
        }
    }
}

#endif
