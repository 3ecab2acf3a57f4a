// The slot protocol: SwitchML's two shadow sets per slot, plus the round id
// the emulator keeps (docs/protocol.md), so late duplicates are harmless.
// Per row (slot, shadow set): worker bitmap, arrivals count, round id (the
// packet id of the round the row holds), and the wire mode of that round.
// One control owns all four because every decision reads them all before
// any is written, and a P4 control (with its registers) is applied once.
//
//   row never held a round (count 0)           -> first arrival of a round
//   packet id == round id:
//     worker's bit set                         -> duplicate: complete round ->
//                                                 RESULT_RETX, else dropped
//     bit clear, round complete                -> stale (its sender moved on): dropped
//     bit clear, round incomplete              -> next arrival
//   packet id older (serial arithmetic, 32 bit) -> stale: dropped
//   packet id newer                            -> first arrival of a new round
//   next arrival with another mode than the round's -> dropped (mode mismatch)
// An arrival sets the worker's bit in its set and clears it in the other; the
// first one writes the registers (the implicit reset), the last one (count
// reaches num_workers) reads the result out. Every fold is logged, in fold
// order (arrival_log.p4), for the control plane's bit-exact checks.
#ifndef FPISA_SLOT_PROTOCOL_P4
#define FPISA_SLOT_PROTOCOL_P4

#include "headers.p4"
#include "arrival_log.p4"

control SlotProtocol(inout headers_t hdr, inout metadata_t meta) {
    register<bit<32>>(POOL_ROWS) worker_bitmap;
    register<bit<8>>(POOL_ROWS) worker_count;
    register<bit<32>>(POOL_ROWS) round_id;
    register<bit<8>>(POOL_ROWS) round_mode;
    ArrivalLog() log;

    apply {
        bit<32> worker_bit = (bit<32>)1 << meta.rank;
        bit<32> other_row = meta.row ^ 1;
        bit<32> this_set;
        bit<32> other_set;
        bit<8> count;
        bit<32> held_round;
        bit<8> held_mode;
        worker_bitmap.read(this_set, meta.row);
        worker_bitmap.read(other_set, other_row);
        worker_count.read(count, meta.row);
        round_id.read(held_round, meta.row);
        round_mode.read(held_mode, meta.row);

        // The table above as straight-line code (SEL, headers.p4: no BMv2
        // pipeline nodes):
        // every register is written back, with the value read unless the
        // packet proceeds.
        bool complete = count == meta.job_num_workers;
        bit<32> age = held_round - hdr.agg.packet_id;
        bool duplicate = (this_set & worker_bit) != 0;
        bool same_round = count != 0 && age == 0;
        meta.first = count == 0 || (age != 0 && age >= 0x80000000);
        meta.retransmit = same_round && duplicate && complete;
        meta.drop_counter = ~MASK(32, count == 0)
            & SEL(32, age == 0,
                  SEL(32, duplicate, ~MASK(32, complete) & C_DROP_DUPLICATE_INCOMPLETE,
                  SEL(32, complete, C_DROP_STALE,
                      MASK(32, hdr.agg.mode != held_mode) & C_DROP_MODE_MISMATCH)),
                  MASK(32, age < 0x80000000) & C_DROP_STALE);
        bool proceed = meta.first
            || (same_round && !duplicate && !complete && hdr.agg.mode == held_mode);
        bit<32> arriving = worker_bit & MASK(32, proceed);
        worker_bitmap.write(meta.row, this_set | arriving);
        worker_bitmap.write(other_row, other_set & ~arriving);
        round_id.write(meta.row, SEL(32, meta.first, hdr.agg.packet_id, held_round));
        round_mode.write(meta.row, SEL(8, meta.first, hdr.agg.mode, held_mode));
        count = SEL(8, !proceed, count, SEL(8, meta.first, 1, count + 1));
        worker_count.write(meta.row, count);
        meta.update = proceed;
        meta.readout = meta.retransmit || (proceed && count == meta.job_num_workers);
        log.apply(hdr, meta);
    }
}

#endif
