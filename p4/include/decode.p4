// Extract (numerics section 1) of one little-endian wire element of the
// build's format (generated/format.p4: fp32, fp16 or bf16): the switch does
// the byte swap (FPISA's proposal), so hosts send their memory as it is.
//
// Written as straight-line assignments with masks (SEL, headers.p4), not
// if-trees: p4c turns every `if` (and `?:`) in an apply block into a BMv2
// pipeline node (a conditional, and a table per run of statements), which
// BMv2 walks per packet and lane; straight-line code is one action.
#ifndef FPISA_DECODE_P4
#define FPISA_DECODE_P4

#include "headers.p4"

// exponent: biased exponent, 1 for zeros and subnormals, 0 for Inf/NaN;
// mantissa: the signed mantissa S (two's complement, 32 bit);
// special: ELEMENT_POS_INF / NEG_INF / NAN or 0;
// implied_one: the value is normal (fpisa-a flushes the others to zero).
control DecodeElement(in bit<ELEMENT_BITS> wire_value, out bit<16> exponent, out bit<32> mantissa,
                      out bit<8> special, out bool implied_one) {
    apply {
        bit<ELEMENT_BITS> bits = WIRE_ORDER(wire_value);
        bit<EXPONENT_BITS> biased = bits[ELEMENT_BITS - 2:FRACTION_BITS];
        bool is_special = biased == (bit<EXPONENT_BITS>)EXPONENT_ALL_ONES;
        special = MASK(8, is_special)
                & SEL(8, bits[FRACTION_BITS - 1:0] != 0, ELEMENT_NAN,
                      SEL(8, bits[ELEMENT_BITS - 1:ELEMENT_BITS - 1] == 1, ELEMENT_NEG_INF, ELEMENT_POS_INF));
        implied_one = !is_special && biased != 0;
        exponent = ~MASK(16, is_special) & ((bit<16>)biased | (bit<16>)(bit<1>)(biased == 0));
        // the magnitude with the implied one of a normal value
        bit<32> magnitude = ((bit<32>)bits & FRACTION_MASK) | ((bit<32>)(bit<1>)implied_one << FRACTION_BITS);
        mantissa = ~MASK(32, is_special) & SEL(32, bits[ELEMENT_BITS - 1:ELEMENT_BITS - 1] == 1,
                                               0 - magnitude, magnitude);
    }
}

#endif
