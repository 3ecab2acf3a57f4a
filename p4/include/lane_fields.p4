// The working fields of the lanes (lanes.p4): one set per program, shared by
// all N_ELEMENTS lanes.
#ifndef FPISA_LANE_FIELDS_P4
#define FPISA_LANE_FIELDS_P4

#include "headers.p4"

// The lanes' working fields, one set shared by all 48 lanes of a program
// (each lane writes a field before it reads it). BMv2 keeps every field of a
// program in every packet and pays for each per packet (reset, a copy per
// multicast replica, and in pcap-file mode the allocation of every queued
// packet), so 48 lanes with their own temporaries cost 48 times the fields
// (fpisa: 1,387 fields before, docs/p4.md "Speed on BMv2").
struct fpisa_lane_t {
    // per packet
    bool    any_special;      // an Inf/NaN among the packet's elements
    bool    flags_valid;      // the per-lane flag registers hold this round's flags
    bit<8>  row_flags;        // OR of the row's element flags (ELEMENT_*)
    // the incoming element
    bit<8>  exponent;
    bit<32> mantissa;
    bit<8>  special;
    // the registers
    bit<8>  stored_exponent;
    bit<32> stored_mantissa;
    bit<8>  flags;
    bit<8>  new_exponent;
    bit<32> new_mantissa;
    bit<32> moved_stored;     // FpisaGeneral: the aligned addends (overflow)
    bit<32> moved_incoming;
    // read-out
    bit<32> magnitude;
    bit<8>  leading_one;
    bit<16> exponent_plus_p;
    bit<32> bits;
}

// fpisa_a's (fpisa_a_registers.p4, normalize.p4)
struct fpisa_a_lane_t {
    bool    any_special;      // an Inf/NaN among the packet's elements
    bit<8>  row_flags;        // the read-out: OR of the row's element flags
    bit<16> exponent;         // incoming e (0: flushed)
    bit<64> addend;           // incoming S, aligned by the shift tables
    bit<8>  special;
    bit<16> stored_exponent;  // the exponent register: flags << 8 | E
    bit<32> stored_mantissa;
    bit<8>  alignment;
    bit<8>  distance;
    bit<32> new_mantissa;
    bit<8>  flags;
    // read-out
    bit<32> magnitude;
    bit<8>  leading_one;
    bit<16> exponent_plus_p;
    bit<8>  shift_key;
    bit<64> significand;
    bit<32> bits;
}

#endif
