// Extract (numerics section 1) of one little-endian fp32 wire element:
// the switch does the byte swap (FPISA's proposal), so hosts send their
// memory as it is.
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
    SwapBytes32() swap;

    apply {
        bit<32> bits;
        swap.apply(wire_value, bits);
        bit<8> biased = bits[30:23];
        bit<32> magnitude = (bit<32>)bits[22:0];
        special = 0;
        exponent = 0;
        mantissa = 0;
        implied_one = false;
        if (biased == 0xFF) {
            if (bits[22:0] != 0) {
                special = ELEMENT_NAN;
            } else if (bits[31:31] == 1) {
                special = ELEMENT_NEG_INF;
            } else {
                special = ELEMENT_POS_INF;
            }
        } else {
            if (biased == 0) {
                exponent = 1;
            } else {
                exponent = (bit<16>)biased;
                magnitude = magnitude | 0x00800000;
                implied_one = true;
            }
            if (bits[31:31] == 1) {
                mantissa = 0 - magnitude;
            } else {
                mantissa = magnitude;
            }
        }
    }
}

#endif
