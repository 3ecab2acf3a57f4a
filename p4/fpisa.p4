// FPISA with the proposed extended ALU (numerics section 2): variable shifts,
// the stored mantissa shifted before the add (RSAW), read-out normalization
// with a leading-one search and variable shifts.
//
// This file only instantiates and wires the per-concern controls in include/;
// docs/p4.md describes the design. Build: fpisa p4 build
#include <core.p4>
#include <v1model.p4>

#include "include/headers.p4"
#include "include/parser.p4"
#include "include/validate_packet.p4"
#include "include/worker_check.p4"
#include "include/slot_protocol.p4"
#include "include/block_exponent.p4"
#include "include/lanes.p4"
#include "include/result.p4"
#include "include/generated/fpisa_lanes.p4"

control FpisaIngress(inout headers_t hdr, inout metadata_t meta,
                  inout standard_metadata_t standard_metadata) {
    ValidatePacket(MODE_FPISA, MODE_FPISA, true) validate;
    WorkerCheck() worker_check;
    SlotProtocol() slot_protocol;
    BlockExponentMax() block_exponent;
    PrepareRawRegisters(true) prepare_raw;
    FpisaLanes() lanes;
    ResultHeader() result;
    CountOutcome() count_outcome;

    apply {
        meta.first = false;
        meta.update = false;
        meta.readout = false;
        meta.retransmit = false;
        meta.want_raw = false;
        meta.is_multicast = false;
        meta.row_flags = 0;
        validate.apply(hdr, meta);
        if (meta.drop_counter == 0) {
            meta.int_max_mode = hdr.agg.mode == MODE_INT_MAX;
            worker_check.apply(hdr, meta);
        }
        if (meta.drop_counter == 0) {
            slot_protocol.apply(hdr, meta);
        }
        if (meta.drop_counter == 0) {
            block_exponent.apply(hdr, meta);
            prepare_raw.apply(hdr, meta);
            lanes.apply(hdr, meta);
            if (meta.readout) {
                result.apply(hdr, meta, standard_metadata);
            } else {
                mark_to_drop(standard_metadata);  // folded in; the last arrival answers
            }
        } else {
            mark_to_drop(standard_metadata);
        }
        count_outcome.apply(meta);
    }
}

V1Switch(AggregationParser(), NoChecksumVerification(), FpisaIngress(), ResultEgress(),
         Ipv4ChecksumUpdate(), AggregationDeparser()) main;
