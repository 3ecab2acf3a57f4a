// Header and metadata types shared by all three programs.
#ifndef FPISA_HEADERS_P4
#define FPISA_HEADERS_P4

#include "constants.p4"
#include "generated/configuration.p4"
#include "generated/format.p4"

// Selects without `?:`. p4c's front end rewrites every `c ? a : b` into an if
// statement (SideEffectOrdering), and an `if` in an apply block is a BMv2
// pipeline node (a conditional, plus a table per branch's statements), which
// BMv2 walks per packet. A mask from the condition keeps the choice inside one
// expression of one action: MASK is all ones if c, else 0 (the bool -> bit
// cast becomes a BMv2 expression only in p4c's back end). SEL evaluates both
// a and b (W bits each), c twice.
#define MASK(W, c) ((bit<W>)0 - (bit<W>)(bit<1>)(c))
#define SEL(W, c, a, b) ((((bit<W>)(a)) & MASK(W, c)) | (((bit<W>)(b)) & ~MASK(W, c)))
// The same select by a multiplication: b + (a - b) * c (c 0 or 1, W-bit
// wrapping arithmetic). Fewer BMv2 operations than SEL (each operand and c
// once, no masks), which the lanes use.
#define SELECT(W, c, a, b) ((b) + ((a) - (b)) * (bit<W>)(bit<1>)(c))

header ethernet_t {
    bit<48> dst_addr;
    bit<48> src_addr;
    bit<16> ether_type;
}

header ipv4_t {
    bit<4>  version;
    bit<4>  ihl;
    bit<8>  diffserv;
    bit<16> total_len;
    bit<16> identification;
    bit<3>  flags;
    bit<13> frag_offset;
    bit<8>  ttl;
    bit<8>  protocol;
    bit<16> hdr_checksum;
    bit<32> src_addr;
    bit<32> dst_addr;
}

header udp_t {
    bit<16> src_port;
    bit<16> dst_port;
    bit<16> length;
    bit<16> checksum;
}

struct headers_t {
    ethernet_t ethernet;
    ipv4_t ipv4;
    udp_t udp;
    agg_t agg;
    payload_t elements;  // the N_ELEMENTS elements (generated/configuration.p4)
    raw_registers_t raw;  // FLAG_RAW results (generated/configuration.p4)
}

struct metadata_t {
    // why the packet stops here (an index into switch_counter), 0 = goes on
    bit<32> drop_counter;
    // from the job table
    bit<8>  job_num_workers;
    bit<16> job_pool_base;
    bit<16> job_pool_size;
    bit<16> job_mcast_grp;
    bit<1>  job_raw_registers;
    // from the worker table
    bit<8>  rank;
    // (slot, shadow set) -> row of every register array
    bit<32> row;
    // first arrival: registers are written (implicit reset), not added to
    bool    first;
    // fold this packet's payload into the row
    bool    update;
    // produce a result from the row (last arrival or retransmission)
    bool    readout;
    bool    retransmit;
    bool    want_raw;
    // OR of the per-element flags of the row, as protocol FLAG_* bits
    bit<8>  row_flags;
    bool    int_max_mode;
    bool    is_multicast;
}

#endif
