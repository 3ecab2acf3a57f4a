// Sticky per-element flags (Inf, NaN, overflow, overwrite) of a row, and
// their summary as the result header's FLAG_* bits.
//
// fpisa keeps, besides a flag register per lane, the OR of all the row's
// element flags in one register per row (row_flags, generated/fpisa_lanes.p4).
// Only packets with an Inf/NaN set element flags (FpisaGeneral), so:
//   - a first arrival without Inf/NaN clears the row's summary only; the lane
//     flag registers then hold an earlier round's flags, and count as 0 while
//     the summary is 0 (t.flags_valid);
//   - FpisaGeneral writes every lane's flags and ORs them into the summary,
//     which is then nonzero (the packet had an Inf/NaN): the lane registers
//     are this round's;
//   - the read-out takes the result's FLAG_* bits from the summary, and reads
//     the lane flags only if the summary has an Inf/NaN (FpisaReadoutSpecial).
#ifndef FPISA_ELEMENT_FLAGS_P4
#define FPISA_ELEMENT_FLAGS_P4

#include "headers.p4"
#include "lane_fields.p4"

// Straight-line (no pipeline nodes of its own): the register is always read
// and written; without an update the value written back is the value read
// (a first arrival always updates).
control ElementFlags(in bit<32> row, in bool first, in bool update, in bit<8> new_flags,
                     out bit<8> flags) {
    register<bit<8>>(POOL_ROWS) element_flags;

    apply {
        element_flags.read(flags, row);
        flags = (flags & ~MASK(8, first)) | (new_flags & MASK(8, update));
        element_flags.write(row, flags);
    }
}

// flags: the OR of every element's flags of the row
control SummarizeFlags(in bit<8> flags, inout bit<8> row_flags) {
    apply {
        row_flags = row_flags
                  | (FLAG_OVERFLOW & MASK(8, (flags & ELEMENT_OVERFLOW) != 0))
                  | (FLAG_OVERWRITE & MASK(8, (flags & ELEMENT_OVERWRITE) != 0))
                  | (FLAG_SPECIAL & MASK(8, (flags & (ELEMENT_POS_INF | ELEMENT_NEG_INF | ELEMENT_NAN)) != 0));
    }
}

// The raw registers of a FLAG_RAW result (big-endian on the wire, the header
// field order), read again per lane and shifted into the raw-register header
// (generated/configuration.p4: a few wide fields): the lanes in order, so
// element 0 ends up first.
#define RAW_SHIFT_IN(mantissas, exponents, mantissa, exponent) \
    mantissas = (mantissas << 64) | (raw_mantissas_t)(bit<64>)(int<64>)(int<32>)(mantissa); \
    exponents = (exponents << 16) | (raw_exponents_t)(exponent)

// fpisa
control FpisaRaw(in bit<32> row, inout raw_mantissas_t mantissas, inout raw_exponents_t exponents,
                 inout fpisa_lane_t t)
                (register<bit<8>> exponent_register, register<bit<32>> mantissa_register) {
    apply {
        exponent_register.read(t.stored_exponent, row);
        mantissa_register.read(t.stored_mantissa, row);
        RAW_SHIFT_IN(mantissas, exponents, t.stored_mantissa, t.stored_exponent);
    }
}

// fpisa_a: the same (the exponent register's bits 7..0 are E).
control FpisaARaw(in bit<32> row, inout raw_mantissas_t mantissas, inout raw_exponents_t exponents,
                  inout fpisa_a_lane_t t)
                 (register<bit<16>> exponent_register, register<bit<32>> mantissa_register) {
    apply {
        exponent_register.read(t.stored_exponent, row);
        mantissa_register.read(t.stored_mantissa, row);
        RAW_SHIFT_IN(mantissas, exponents, t.stored_mantissa, t.stored_exponent & 0xFF);
    }
}

#endif
