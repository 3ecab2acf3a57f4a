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
// reaches num_workers) reads the result out.
#ifndef FPISA_SLOT_PROTOCOL_P4
#define FPISA_SLOT_PROTOCOL_P4

#include "headers.p4"

control SlotProtocol(inout headers_t hdr, inout metadata_t meta) {
    register<bit<32>>(POOL_ROWS) worker_bitmap;
    register<bit<8>>(POOL_ROWS) worker_count;
    register<bit<32>>(POOL_ROWS) round_id;
    register<bit<8>>(POOL_ROWS) round_mode;

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

        meta.first = false;
        meta.update = false;
        meta.readout = false;
        meta.retransmit = false;
        bool complete = count == meta.job_num_workers;
        bool proceed = false;
        if (count == 0) {
            meta.first = true;
            proceed = true;
        } else {
            bit<32> age = held_round - hdr.agg.packet_id;
            if (age == 0) {
                if ((this_set & worker_bit) != 0) {
                    if (complete) {
                        meta.readout = true;
                        meta.retransmit = true;
                    } else {
                        meta.drop_counter = C_DROP_DUPLICATE_INCOMPLETE;
                    }
                } else if (complete) {
                    meta.drop_counter = C_DROP_STALE;
                } else {
                    proceed = true;
                }
            } else if (age < 0x80000000) {
                meta.drop_counter = C_DROP_STALE;
            } else {
                meta.first = true;
                proceed = true;
            }
        }
        if (proceed && !meta.first && hdr.agg.mode != held_mode) {
            meta.drop_counter = C_DROP_MODE_MISMATCH;
            proceed = false;
        }
        if (proceed) {
            worker_bitmap.write(meta.row, this_set | worker_bit);
            worker_bitmap.write(other_row, other_set & ~worker_bit);
            if (meta.first) {
                count = 1;
                round_id.write(meta.row, hdr.agg.packet_id);
                round_mode.write(meta.row, hdr.agg.mode);
            } else {
                count = count + 1;
            }
            worker_count.write(meta.row, count);
            meta.update = true;
            meta.readout = count == meta.job_num_workers;
        }
    }
}

#endif
