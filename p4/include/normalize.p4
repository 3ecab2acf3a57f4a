// Read-out (numerics section 4), rounding toward zero: registers (E, A) and
// the element's flags -> IEEE fp32 bits; then the little-endian wire order.
// Round-to-nearest-even needs the raw registers on the host (FLAG_RAW).
//
//   specials first: NaN (canonical 0x7FC00000) if NaN or both infinities;
//   A = 0 -> +0.0; otherwise with p = position of the leading one of |A|,
//   biased = E + p - 23: >= 255 -> Inf; >= 1 -> normal, the leading one moved
//   to bit 23 (truncating); else subnormal: fraction = |A| << (E - 1).
//
// Only the packet that reads a row out runs these (generated/<p>_lanes.p4
// applies them under one `if (meta.readout)` for all lanes).
#ifndef FPISA_NORMALIZE_P4
#define FPISA_NORMALIZE_P4

#include "headers.p4"
#include "generated/shift_tables.p4"

// The result bits from the flags, the register values and the finite
// candidates (normal and subnormal); the specials and the zero first.
#define FPISA_RESULT_BITS(flags, mantissa, sign, exponent_plus_p, normal, subnormal) \
    SEL(32, ((flags) & ELEMENT_NAN) != 0 \
            || ((flags) & (ELEMENT_POS_INF | ELEMENT_NEG_INF)) == (ELEMENT_POS_INF | ELEMENT_NEG_INF), \
        0x7FC00000, \
    SEL(32, ((flags) & ELEMENT_POS_INF) != 0, 0x7F800000, \
    SEL(32, ((flags) & ELEMENT_NEG_INF) != 0, 0xFF800000, \
    ~MASK(32, (mantissa) == 0) & \
    SEL(32, (exponent_plus_p) >= 255 + 23, (sign) | 0x7F800000, \
    SEL(32, (exponent_plus_p) >= 1 + 23, normal, subnormal)))))

// fpisa: the leading one by a 5-step binary search and variable shifts (the
// proposed extended ALU has a two-operand shifter).
control FpisaReadout(in bit<16> exponent, in bit<32> mantissa, in bit<8> flags,
                     inout bit<32> value) {
    apply {
        bit<32> sign = mantissa & 0x80000000;
        bit<32> magnitude = SEL(32, sign != 0, 0 - mantissa, mantissa);  // |-2^31| = 2^31 still fits unsigned
        // the leading one, p: each step halves the window [p, p + 2w) that
        // holds it by comparing magnitude >> p with 2^w (w = 16, 8, 4, 2, 1)
        bit<8> leading_one = (bit<8>)(bit<1>)(magnitude >= 32w0x00010000) << 4;
        leading_one = leading_one | ((bit<8>)(bit<1>)((magnitude >> leading_one) >= 32w0x100) << 3);
        leading_one = leading_one | ((bit<8>)(bit<1>)((magnitude >> leading_one) >= 32w0x10) << 2);
        leading_one = leading_one | ((bit<8>)(bit<1>)((magnitude >> leading_one) >= 32w0x4) << 1);
        leading_one = leading_one | (bit<8>)(bit<1>)((magnitude >> leading_one) >= 32w0x2);
        // E + p, to compare with 23 + biased without signed numbers
        bit<16> exponent_plus_p = exponent + (bit<16>)leading_one;
        bit<32> bits = FPISA_RESULT_BITS(flags, mantissa, sign, exponent_plus_p,
            sign | (((bit<32>)(exponent_plus_p - 23)) << 23)
                 | (SEL(32, leading_one > 23, magnitude >> (leading_one - 23), magnitude << (23 - leading_one))
                    & 0x007FFFFF),
            // subnormal; here 1 <= E and the net shift E - 1 is a left shift
            sign | (magnitude << (bit<8>)(exponent - 1)));
        value = bits[7:0] ++ bits[15:8] ++ bits[23:16] ++ bits[31:24];
    }
}

// fpisa_a: the leading one from a ternary (TCAM) table and constant shifts,
// as the paper's Tofino read-out does; a subnormal result's fraction from a
// constant-shift table too.
control FpisaAReadout(in bit<16> exponent, in bit<32> mantissa, in bit<8> flags,
                      inout bit<32> value) {
    LeadingOne() leading_one_table;
    SubnormalShift() subnormal_shift;

    apply {
        bit<32> sign = mantissa & 0x80000000;
        bit<32> magnitude = SEL(32, sign != 0, 0 - mantissa, mantissa);
        bit<32> significand;
        bit<8> leading_one;
        leading_one_table.apply(magnitude, significand, leading_one);
        bit<16> exponent_plus_p = exponent + (bit<16>)leading_one;
        bit<32> fraction = magnitude;
        if (exponent_plus_p < 1 + 23) {
            subnormal_shift.apply(fraction, (bit<8>)(exponent - 1));
        }
        bit<32> bits = FPISA_RESULT_BITS(flags, mantissa, sign, exponent_plus_p,
            sign | (((bit<32>)(exponent_plus_p - 23)) << 23) | (significand & 0x007FFFFF),
            sign | fraction);
        value = bits[7:0] ++ bits[15:8] ++ bits[23:16] ++ bits[31:24];
    }
}

#endif
