// Extract (numerics section 1) of one little-endian fp32 wire element: the
// switch does the byte swap (FPISA's proposal), so hosts send their memory as
// it is.
//
// The fields are taken straight from the wire word w (a big-endian header
// field, so w's top byte is the value's lowest byte), which saves the byte
// swap: sign w[7:7], exponent field w[6:0] ++ w[15:15], fraction
// w[14:8] ++ w[23:16] ++ w[31:24].
//
// BMv2 cost (docs/p4.md "Speed on BMv2"): every assignment is an interpreted
// primitive and every operator an interpreted operation (p4c adds a mask
// after each arithmetic operator and cast), so these are single expressions
// without temporaries, written with as few operators as the bits allow.
#ifndef FPISA_DECODE_FP32_P4
#define FPISA_DECODE_FP32_P4

#include "headers.p4"

// fp32: fraction bits m; the exponent field's bits as they lie in the wire word
const bit<8> FP32_FRACTION_BITS = 23;
const bit<32> FP32_WIRE_EXPONENT = 0x0000807F;

// Inf or NaN: the exponent field is all ones
#define FP32_WIRE_IS_SPECIAL(w) (((w) & FP32_WIRE_EXPONENT) == FP32_WIRE_EXPONENT)

control SwapBytes32(in bit<32> value, out bit<32> swapped) {
    apply {
        // shifts and masks: fewer BMv2 operations than slices and ++
        swapped = (value << 24) | ((value << 8) & 0x00FF0000) | ((value >> 8) & 0x0000FF00) | (value >> 24);
    }
}

// A value that is not Inf/NaN (FP32_WIRE_IS_SPECIAL false; the caller
// checks): exponent = the biased exponent, 1 for zeros and subnormals;
// mantissa = the signed mantissa S, two's complement (the lanes keep signed
// values in bit<W> fields and registers and cast to int<W> where the sign
// matters: BMv2 reads a register into a field without sign-extending it).
control DecodeFp32(in bit<32> w, out bit<8> exponent, out bit<32> mantissa) {
    apply {
        exponent = (bit<8>)((w << 1) | ((w >> 15) & 1))
                 | (bit<8>)(bit<1>)((w & FP32_WIRE_EXPONENT) == 0);
        // the magnitude with the implied one of a normal value, times 1 or
        // -1 (1 - 2 * sign, wrapping)
        mantissa = (((w & 0x7F00) << 8) | ((w >> 8) & 0xFF00) | (w >> 24)
                    | ((bit<32>)(bit<1>)((w & FP32_WIRE_EXPONENT) != 0) << FP32_FRACTION_BITS))
                 * (1 - ((w >> 6) & 2));
    }
}

// special: ELEMENT_POS_INF / NEG_INF / NAN, or 0 for a finite value
control SpecialFp32(in bit<32> w, out bit<8> special) {
    apply {
        special = (bit<8>)(bit<1>)FP32_WIRE_IS_SPECIAL(w)
                * SELECT(8, (w & 0xFFFF7F00) != 0, ELEMENT_NAN,
                         SELECT(8, w[7:7] == 1, ELEMENT_NEG_INF, ELEMENT_POS_INF));
    }
}

// fpisa-a (numerics section 3) keeps normal values only: exponent = the biased
// exponent, 0 for zeros and subnormals (flushed); mantissa = S as 64-bit two's
// complement (the alignment tables shift it), 0 if flushed. Not for Inf/NaN.
control DecodeFp32Normal(in bit<32> w, out bit<16> exponent, out bit<64> mantissa) {
    apply {
        exponent = (bit<16>)(bit<8>)((w << 1) | ((w >> 15) & 1));
        mantissa = (bit<64>)(((w & 0x7F00) << 8) | ((w >> 8) & 0xFF00) | (w >> 24) | (32w1 << FP32_FRACTION_BITS))
                 * (1 - (bit<64>)((w >> 6) & 2))
                 * (bit<64>)(bit<1>)((w & FP32_WIRE_EXPONENT) != 0);
    }
}

#endif
