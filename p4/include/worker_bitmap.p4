// SwitchML's worker bitmap, one per (slot, shadow set): an arrival sets the
// worker's bit in its set and clears it in the other set, so the other set
// can be reused; a bit that is already set marks a duplicate.
#ifndef FPISA_WORKER_BITMAP_P4
#define FPISA_WORKER_BITMAP_P4

#include "headers.p4"

control UpdateAndCheckWorkerBitmap(inout headers_t hdr, inout metadata_t meta) {
    register<bit<32>>(POOL_ROWS) worker_bitmap;

    apply {
        bit<32> worker_bit = (bit<32>)1 << meta.rank;
        bit<32> other_row = meta.row ^ 1;
        bit<32> this_set;
        bit<32> other_set;
        worker_bitmap.read(this_set, meta.row);
        worker_bitmap.read(other_set, other_row);
        meta.duplicate = (this_set & worker_bit) != 0;
        worker_bitmap.write(meta.row, this_set | worker_bit);
        worker_bitmap.write(other_row, other_set & ~worker_bit);
    }
}

#endif
