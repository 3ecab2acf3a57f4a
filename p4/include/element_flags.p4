// Sticky per-element flags (Inf, NaN, overflow, overwrite) of a row, and
// their summary as the result header's FLAG_* bits.
#ifndef FPISA_ELEMENT_FLAGS_P4
#define FPISA_ELEMENT_FLAGS_P4

#include "headers.p4"

control ElementFlags(in bit<32> row, in bool first, in bool update, in bit<8> new_flags,
                     out bit<8> flags) {
    register<bit<8>>(POOL_ROWS) element_flags;

    apply {
        flags = 0;
        if (!first) {
            element_flags.read(flags, row);
        }
        if (update) {
            flags = flags | new_flags;
            element_flags.write(row, flags);
        }
    }
}

control SummarizeFlags(in bit<8> flags, inout bit<8> row_flags) {
    apply {
        if ((flags & ELEMENT_OVERFLOW) != 0) {
            row_flags = row_flags | FLAG_OVERFLOW;
        }
        if ((flags & ELEMENT_OVERWRITE) != 0) {
            row_flags = row_flags | FLAG_OVERWRITE;
        }
        if ((flags & (ELEMENT_POS_INF | ELEMENT_NEG_INF | ELEMENT_NAN)) != 0) {
            row_flags = row_flags | FLAG_SPECIAL;
        }
    }
}

// The raw registers appended to results with FLAG_RAW (big-endian on the
// wire, which is the header field order).
control RawRegisters(in bit<16> exponent, in bit<32> mantissa,
                     inout bit<64> raw_mantissa, inout bit<16> raw_exponent) {
    apply {
        raw_mantissa = (bit<64>)mantissa;
        if (mantissa[31:31] == 1) {
            raw_mantissa = raw_mantissa | 0xFFFFFFFF00000000;  // sign extension
        }
        raw_exponent = exponent;
    }
}

#endif
