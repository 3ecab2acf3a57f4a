// Sticky per-element flags (Inf, NaN, overflow, overwrite) of a row, and
// their summary as the result header's FLAG_* bits.
#ifndef FPISA_ELEMENT_FLAGS_P4
#define FPISA_ELEMENT_FLAGS_P4

#include "headers.p4"

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

// The raw registers appended to results with FLAG_RAW (big-endian on the
// wire, which is the header field order).
control RawRegisters(in bit<16> exponent, in bit<32> mantissa,
                     inout bit<64> raw_mantissa, inout bit<16> raw_exponent) {
    apply {
        // sign extension
        raw_mantissa = (bit<64>)mantissa | (64w0xFFFFFFFF00000000 & MASK(64, mantissa[31:31] == 1));
        raw_exponent = exponent;
    }
}

#endif
