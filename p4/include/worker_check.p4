// Which job, which worker: the job table gives the job's size, its part of
// the slot pool and its multicast group; the worker table maps the source
// (IP, UDP port) to the rank registered by the control plane. Unknown jobs
// and workers, and a header rank that is not the registered one, are dropped.
#ifndef FPISA_WORKER_CHECK_P4
#define FPISA_WORKER_CHECK_P4

#include "headers.p4"

control WorkerCheck(inout headers_t hdr, inout metadata_t meta) {
    bool job_known = false;
    bool worker_known = false;

    // raw_registers = 1: every float result carries the raw registers
    action set_job(bit<8> num_workers, bit<16> pool_base, bit<16> pool_size, bit<16> mcast_grp,
                   bit<1> raw_registers) {
        job_known = true;
        meta.job_num_workers = num_workers;
        meta.job_pool_base = pool_base;
        meta.job_pool_size = pool_size;
        meta.job_mcast_grp = mcast_grp;
        meta.job_raw_registers = raw_registers;
    }
    action unknown_job() { job_known = false; }
    table job {
        key = { hdr.agg.job : exact; }
        actions = { set_job; unknown_job; }
        default_action = unknown_job();
        size = MAX_JOBS;
    }

    action set_rank(bit<8> rank) {
        worker_known = true;
        meta.rank = rank;
    }
    action unknown_worker() { worker_known = false; }
    table worker {
        key = {
            hdr.agg.job : exact;
            hdr.ipv4.src_addr : exact;
            hdr.udp.src_port : exact;
        }
        actions = { set_rank; unknown_worker; }
        default_action = unknown_worker();
        size = 4096;
    }

    apply {
        // Both lookups, then one assignment: the worker table only sets the
        // rank, which nothing uses when the job check already dropped the
        // packet (fewer BMv2 pipeline nodes than nested ifs).
        job.apply();
        worker.apply();
        // two rows per slot, one per shadow set
        meta.row = (((bit<32>)meta.job_pool_base + (bit<32>)hdr.agg.slot) << 1)
            | (bit<32>)hdr.agg.shadow_set;
        meta.drop_counter = SEL(32, !job_known, C_DROP_UNKNOWN_JOB,
            SEL(32, hdr.agg.num_workers != meta.job_num_workers, C_DROP_BAD_HEADER,
            SEL(32, !worker_known, C_DROP_UNKNOWN_WORKER,
            SEL(32, hdr.agg.rank != meta.rank, C_DROP_RANK_MISMATCH,
            MASK(32, (bit<16>)hdr.agg.slot >= meta.job_pool_size) & C_DROP_BAD_SLOT))));
    }
}

#endif
