// The arrival log: one entry per contribution folded into a row, in fold
// order, for the control plane's bit-exact checks (docs/p4.md "Arrival
// log"). The emulator keeps the same record (emulator.pipeline.ArrivalLog).
//
// A ring of ARRIVAL_LOG_ENTRIES 64-bit entries and a 32-bit count of folded
// contributions. Every packet that reaches the slot protocol writes its entry
// at index count mod ARRIVAL_LOG_ENTRIES; only a folded one advances the
// count, so a packet that is not folded (duplicate, stale, retransmission
// request) leaves an entry that the next fold overwrites and nobody reads:
// the control plane reads entries [read so far, count) only. Straight-line:
// one register read and two writes per packet, no condition.
//
// Entry (bit 63 stays 0, so thrift's signed 64-bit register values carry it):
//   [31:0]  packet id (the round id)
//   [47:32] row ((pool base + slot) << 1 | shadow set)
//   [55:48] wire mode
//   [60:56] rank
//   [61]    first arrival of a new round (the row's implicit reset)
//   [62]    1: a folded contribution (0: the entry of a packet not folded)
// The control plane (emulator.bmv2.arrival_log) reads the count before and
// after the ring: an entry it reads is intact if fewer than
// ARRIVAL_LOG_ENTRIES entries were written after it, else it reports an
// overflow (never a silently wrong order).
#ifndef FPISA_ARRIVAL_LOG_P4
#define FPISA_ARRIVAL_LOG_P4

#include "headers.p4"

// a power of two (the index is a mask); emulator.bmv2.arrival_log reads
// the size from the compiled JSON
const bit<32> ARRIVAL_LOG_ENTRIES = 65536;

control ArrivalLog(in headers_t hdr, in metadata_t meta) {
    register<bit<64>>(ARRIVAL_LOG_ENTRIES) arrival_log;
    register<bit<32>>(1) arrival_count;

    apply {
        bit<32> count;
        arrival_count.read(count, 0);
        bit<64> entry = (bit<64>)hdr.agg.packet_id
            | ((bit<64>)(bit<16>)meta.row << 32)
            | ((bit<64>)hdr.agg.mode << 48)
            | ((bit<64>)(bit<5>)meta.rank << 56)
            | ((bit<64>)(bit<1>)meta.first << 61)
            | ((bit<64>)(bit<1>)meta.update << 62);
        arrival_log.write(count & (ARRIVAL_LOG_ENTRIES - 1), entry);
        // the count updated in its own field (an expression passed to write()
        // would be one more metadata field)
        count = count + (bit<32>)(bit<1>)meta.update;
        arrival_count.write(0, count);
    }
}

#endif
