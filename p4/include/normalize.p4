// Read-out (numerics section 4), rounding toward zero: registers (E, A) and
// the element's flags -> IEEE bits of the build's format (generated/format.p4:
// m = FRACTION_BITS, all-ones = EXPONENT_ALL_ONES); then the little-endian
// wire order. Round-to-nearest-even needs the raw registers on the host
// (FLAG_RAW).
//
//   specials first: NaN (canonical RESULT_NAN, fp32 0x7FC00000) if NaN or both
//   infinities; A = 0 -> +0.0; otherwise with p = position of the leading one
//   of |A|, biased = E + p - m: >= all-ones -> Inf; >= 1 -> normal, the
//   leading one moved to bit m (truncating); else subnormal: fraction =
//   |A| << (E - 1).
//
// Only the packet that reads a row out runs these (generated/<p>_lanes.p4
// applies them under one `if (meta.readout)` for all lanes).
#ifndef FPISA_NORMALIZE_P4
#define FPISA_NORMALIZE_P4

#include "headers.p4"
#include "generated/shift_tables.p4"

// The result bits from the flags, the register values and the finite
// candidates (normal and subnormal); the specials and the zero first. sign:
// the result's sign bit (bit ELEMENT_BITS - 1).
#define FPISA_RESULT_BITS(flags, mantissa, sign, exponent_plus_p, normal, subnormal) \
    SEL(32, ((flags) & ELEMENT_NAN) != 0 \
            || ((flags) & (ELEMENT_POS_INF | ELEMENT_NEG_INF)) == (ELEMENT_POS_INF | ELEMENT_NEG_INF), \
        RESULT_NAN, \
    SEL(32, ((flags) & ELEMENT_POS_INF) != 0, RESULT_POS_INF, \
    SEL(32, ((flags) & ELEMENT_NEG_INF) != 0, RESULT_NEG_INF, \
    ~MASK(32, (mantissa) == 0) & \
    SEL(32, (exponent_plus_p) >= EXPONENT_ALL_ONES + FRACTION_BITS, (sign) | RESULT_POS_INF, \
    SEL(32, (exponent_plus_p) >= 1 + FRACTION_BITS, normal, subnormal)))))

// fpisa: the leading one by a 5-step binary search and variable shifts (the
// proposed extended ALU has a two-operand shifter).
control FpisaReadout(in bit<16> exponent, in bit<32> mantissa, in bit<8> flags,
                     inout bit<ELEMENT_BITS> value) {
    apply {
        bit<32> sign = (mantissa & 0x80000000) >> (32 - ELEMENT_BITS);  // the result's sign bit
        bit<32> magnitude = SEL(32, sign != 0, 0 - mantissa, mantissa);  // |-2^31| = 2^31 still fits unsigned
        // the leading one, p: each step halves the window [p, p + 2w) that
        // holds it by comparing magnitude >> p with 2^w (w = 16, 8, 4, 2, 1)
        bit<8> leading_one = (bit<8>)(bit<1>)(magnitude >= 32w0x00010000) << 4;
        leading_one = leading_one | ((bit<8>)(bit<1>)((magnitude >> leading_one) >= 32w0x100) << 3);
        leading_one = leading_one | ((bit<8>)(bit<1>)((magnitude >> leading_one) >= 32w0x10) << 2);
        leading_one = leading_one | ((bit<8>)(bit<1>)((magnitude >> leading_one) >= 32w0x4) << 1);
        leading_one = leading_one | (bit<8>)(bit<1>)((magnitude >> leading_one) >= 32w0x2);
        // E + p, to compare with m + biased without signed numbers
        bit<16> exponent_plus_p = exponent + (bit<16>)leading_one;
        bit<ELEMENT_BITS> bits = (bit<ELEMENT_BITS>)FPISA_RESULT_BITS(flags, mantissa, sign, exponent_plus_p,
            sign | (((bit<32>)(exponent_plus_p - FRACTION_BITS)) << FRACTION_BITS)
                 | (SEL(32, leading_one > FRACTION_BITS, magnitude >> (leading_one - FRACTION_BITS),
                        magnitude << (FRACTION_BITS - leading_one))
                    & FRACTION_MASK),
            // subnormal; here 1 <= E and the net shift E - 1 is a left shift
            sign | (magnitude << (bit<8>)(exponent - 1)));
        value = WIRE_ORDER(bits);
    }
}

// fpisa_a: the leading one from a ternary (TCAM) table and constant shifts,
// as the paper's Tofino read-out does; a subnormal result's fraction from a
// constant-shift table too.
control FpisaAReadout(in bit<16> exponent, in bit<32> mantissa, in bit<8> flags,
                      inout bit<ELEMENT_BITS> value) {
    LeadingOne() leading_one_table;
    SubnormalShift() subnormal_shift;

    apply {
        bit<32> sign = (mantissa & 0x80000000) >> (32 - ELEMENT_BITS);  // the result's sign bit
        bit<32> magnitude = SEL(32, sign != 0, 0 - mantissa, mantissa);
        bit<32> significand;
        bit<8> leading_one;
        leading_one_table.apply(magnitude, significand, leading_one);
        bit<16> exponent_plus_p = exponent + (bit<16>)leading_one;
        bit<32> fraction = magnitude;
        if (exponent_plus_p < 1 + FRACTION_BITS) {
            subnormal_shift.apply(fraction, (bit<8>)(exponent - 1));
        }
        bit<ELEMENT_BITS> bits = (bit<ELEMENT_BITS>)FPISA_RESULT_BITS(flags, mantissa, sign, exponent_plus_p,
            sign | (((bit<32>)(exponent_plus_p - FRACTION_BITS)) << FRACTION_BITS) | (significand & FRACTION_MASK),
            sign | fraction);
        value = WIRE_ORDER(bits);
    }
}

#endif
