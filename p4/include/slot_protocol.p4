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
        // packet proceeds. The conditions are written out where they are used
        // (macros below), and each register is written from the field it was
        // read into: a local or an expression passed to write() would each be
        // one more metadata field, which BMv2 creates, resets and copies with
        // every packet (docs/p4.md, "Speed on BMv2").
#define SP_WORKER_BIT ((bit<32>)1 << meta.rank)
#define SP_AGE (held_round - hdr.agg.packet_id)
#define SP_COMPLETE (count == meta.job_num_workers)
#define SP_DUPLICATE ((this_set & SP_WORKER_BIT) != 0)
#define SP_SAME_ROUND (count != 0 && SP_AGE == 0)
        meta.first = count == 0 || (SP_AGE != 0 && SP_AGE >= 0x80000000);
        meta.retransmit = SP_SAME_ROUND && SP_DUPLICATE && SP_COMPLETE;
        meta.drop_counter = ~MASK(32, count == 0)
            & SEL(32, SP_AGE == 0,
                  SEL(32, SP_DUPLICATE, ~MASK(32, SP_COMPLETE) & C_DROP_DUPLICATE_INCOMPLETE,
                  SEL(32, SP_COMPLETE, C_DROP_STALE,
                      MASK(32, hdr.agg.mode != held_mode) & C_DROP_MODE_MISMATCH)),
                  MASK(32, SP_AGE < 0x80000000) & C_DROP_STALE);
        // the packet proceeds (is folded)
        meta.update = meta.first
            || (SP_SAME_ROUND && !SP_DUPLICATE && !SP_COMPLETE && hdr.agg.mode == held_mode);
        this_set = this_set | (SP_WORKER_BIT & MASK(32, meta.update));
        other_set = other_set & ~(SP_WORKER_BIT & MASK(32, meta.update));
        worker_bitmap.write(meta.row, this_set);
        worker_bitmap.write(other_row, other_set);
        held_round = SEL(32, meta.first, hdr.agg.packet_id, held_round);
        round_id.write(meta.row, held_round);
        held_mode = SEL(8, meta.first, hdr.agg.mode, held_mode);
        round_mode.write(meta.row, held_mode);
        count = SEL(8, !meta.update, count, SEL(8, meta.first, 1, count + 1));
        worker_count.write(meta.row, count);
        meta.readout = meta.retransmit || (meta.update && count == meta.job_num_workers);
#undef SP_WORKER_BIT
#undef SP_AGE
#undef SP_COMPLETE
#undef SP_DUPLICATE
#undef SP_SAME_ROUND
        log.apply(hdr, meta);
    }
}

#endif
