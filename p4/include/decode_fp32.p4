// Extract (numerics section 1) of one little-endian fp32 wire element:
// the switch does the byte swap (FPISA's proposal), so hosts send their
// memory as it is.
//
// Written as straight-line assignments with masks (SEL, headers.p4), not
// if-trees: p4c turns every `if` (and `?:`) in an apply block into a BMv2
// pipeline node (a conditional, and a table per run of statements), which
// BMv2 walks per packet and lane; straight-line code is one action.
#ifndef FPISA_DECODE_FP32_P4
#define FPISA_DECODE_FP32_P4

#include "headers.p4"

control SwapBytes32(in bit<32> value, out bit<32> swapped) {
    apply {
        swapped = value[7:0] ++ value[15:8] ++ value[23:16] ++ value[31:24];
    }
}

// exponent: biased exponent, 1 for zeros and subnormals, 0 for Inf/NaN;
// mantissa: the signed mantissa S (two's complement, 32 bit);
// special: ELEMENT_POS_INF / NEG_INF / NAN or 0;
// implied_one: the value is normal (fpisa-a flushes the others to zero).
control DecodeFp32(in bit<32> wire_value, out bit<16> exponent, out bit<32> mantissa,
                   out bit<8> special, out bool implied_one) {
    apply {
        bit<32> bits = wire_value[7:0] ++ wire_value[15:8] ++ wire_value[23:16] ++ wire_value[31:24];
        bit<8> biased = bits[30:23];
        bool is_special = biased == 0xFF;
        special = MASK(8, is_special)
                & SEL(8, bits[22:0] != 0, ELEMENT_NAN,
                      SEL(8, bits[31:31] == 1, ELEMENT_NEG_INF, ELEMENT_POS_INF));
        implied_one = !is_special && biased != 0;
        exponent = ~MASK(16, is_special) & ((bit<16>)biased | (bit<16>)(bit<1>)(biased == 0));
        // the magnitude with the implied one of a normal value
        bit<32> magnitude = (bits & 0x007FFFFF) | ((bit<32>)(bit<1>)implied_one << 23);
        mantissa = ~MASK(32, is_special) & SEL(32, bits[31:31] == 1, 0 - magnitude, magnitude);
    }
}

#endif
