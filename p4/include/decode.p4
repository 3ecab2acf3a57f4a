// Extract (numerics section 1) of one little-endian wire element of the
// build's format (generated/format.p4: fp32, fp16 or bf16): the switch does
// the byte swap (FPISA's proposal), so hosts send their memory as it is.
//
// The fields are taken straight from the wire word w (a big-endian header
// field, so w's lowest byte is the value's top byte), which saves the byte
// swap: format.p4's WIRE_* macros (generated per format; fp32: sign w[7:7],
// exponent field w[6:0] ++ w[15:15], fraction w[14:8] ++ w[23:16] ++ w[31:24]).
//
// BMv2 cost (docs/p4.md "Speed on BMv2"): every assignment is an interpreted
// primitive and every operator an interpreted operation (p4c adds a mask
// after each arithmetic operator and cast), so these are single expressions
// without temporaries, written with as few operators as the bits allow.
#ifndef FPISA_DECODE_P4
#define FPISA_DECODE_P4

#include "headers.p4"

// A value that is not Inf/NaN (WIRE_IS_SPECIAL false; the caller checks):
// exponent = the biased exponent, 1 for zeros and subnormals; mantissa = the
// signed mantissa S, two's complement (the lanes keep signed values in
// bit<W> fields and registers and cast to int<W> where the sign matters:
// BMv2 reads a register into a field without sign-extending it).
// The same as expressions (a lane that uses a value once takes it inline:
// one assignment fewer, each a BMv2 primitive with a field write).
#define DECODE_EXPONENT(w) \
    (WIRE_BIASED(w) | (bit<8>)(bit<1>)(((w) & (bit<ELEMENT_BITS>)WIRE_EXPONENT) == 0))
#define DECODE_MANTISSA(w) \
    ((WIRE_FRACTION_BITS(w) | ((bit<32>)(bit<1>)(((w) & (bit<ELEMENT_BITS>)WIRE_EXPONENT) != 0) << FRACTION_BITS)) \
     * (1 - WIRE_SIGN_TWICE(w)))

control DecodeElement(in bit<ELEMENT_BITS> w, out bit<8> exponent, out bit<32> mantissa) {
    apply {
        exponent = DECODE_EXPONENT(w);
        // the magnitude with the implied one of a normal value, times 1 or
        // -1 (1 - 2 * sign, wrapping)
        mantissa = DECODE_MANTISSA(w);
    }
}

// special: ELEMENT_POS_INF / NEG_INF / NAN, or 0 for a finite value
control SpecialElement(in bit<ELEMENT_BITS> w, out bit<8> special) {
    apply {
        special = (bit<8>)(bit<1>)WIRE_IS_SPECIAL(w)
                * SELECT(8, WIRE_FRACTION_NONZERO(w), ELEMENT_NAN,
                         SELECT(8, w[7:7] == 1, ELEMENT_NEG_INF, ELEMENT_POS_INF));
    }
}

// fpisa-a (numerics section 3) keeps normal values only: exponent = the biased
// exponent, 0 for zeros and subnormals (flushed); mantissa = S as 64-bit two's
// complement (the alignment tables shift it), 0 if flushed. Not for Inf/NaN.
control DecodeNormalElement(in bit<ELEMENT_BITS> w, out bit<16> exponent, out bit<64> mantissa) {
    apply {
        exponent = (bit<16>)WIRE_BIASED(w);
        mantissa = (bit<64>)(WIRE_FRACTION_BITS(w) | (32w1 << FRACTION_BITS))
                 * (1 - (bit<64>)WIRE_SIGN_TWICE(w))
                 * (bit<64>)(bit<1>)((w & (bit<ELEMENT_BITS>)WIRE_EXPONENT) != 0);
    }
}

// IEEE bits of the build's format (in a bit<32>) -> the wire element
control WireOrder(in bit<32> bits, out bit<ELEMENT_BITS> value) {
    apply {
        value = BITS_TO_WIRE(bits);
    }
}

#endif
