// How many workers are still missing from a row. A count of 0 means "free
// or complete": the next new arrival is the first (it writes the registers,
// the implicit reset) and stores num_workers - 1; the arrival that brings the
// count back to 0 is the last and triggers the result. A duplicate for a
// complete row asks for the result again; for an incomplete row it is dropped.
#ifndef FPISA_WORKER_COUNT_P4
#define FPISA_WORKER_COUNT_P4

#include "headers.p4"

control CountWorkers(inout headers_t hdr, inout metadata_t meta) {
    register<bit<8>>(POOL_ROWS) worker_count;

    apply {
        bit<8> missing;
        worker_count.read(missing, meta.row);
        meta.first = false;
        meta.update = false;
        meta.readout = false;
        meta.retransmit = false;
        if (meta.duplicate) {
            if (missing == 0) {
                meta.readout = true;
                meta.retransmit = true;
            } else {
                meta.drop_counter = C_DROP_DUPLICATE_INCOMPLETE;
            }
        } else {
            meta.update = true;
            if (missing == 0) {
                meta.first = true;
                missing = meta.job_num_workers - 1;
            } else {
                missing = missing - 1;
            }
            worker_count.write(meta.row, missing);
            meta.readout = missing == 0;
        }
    }
}

#endif
