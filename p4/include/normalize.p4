// Read-out (numerics section 4), rounding toward zero: registers (E, A) and
// the element's flags -> IEEE fp32 bits; then the little-endian wire order.
// Round-to-nearest-even needs the raw registers on the host (FLAG_RAW).
//
//   specials first: NaN (canonical 0x7FC00000) if NaN or both infinities;
//   A = 0 -> +0.0; otherwise with p = position of the leading one of |A|,
//   biased = E + p - 23: >= 255 -> Inf; >= 1 -> normal, the leading one moved
//   to bit 23 (truncating); else subnormal: fraction = |A| << (E - 1).
#ifndef FPISA_NORMALIZE_P4
#define FPISA_NORMALIZE_P4

#include "headers.p4"
#include "generated/shift_tables.p4"

// The specials and the zero; done = false when a finite nonzero is left.
control SpecialResult(in bit<32> mantissa, in bit<8> flags, out bit<32> bits, out bool done) {
    apply {
        done = true;
        bits = 0;
        bit<8> both_inf = ELEMENT_POS_INF | ELEMENT_NEG_INF;
        if ((flags & ELEMENT_NAN) != 0 || (flags & both_inf) == both_inf) {
            bits = 0x7FC00000;
        } else if ((flags & ELEMENT_POS_INF) != 0) {
            bits = 0x7F800000;
        } else if ((flags & ELEMENT_NEG_INF) != 0) {
            bits = 0xFF800000;
        } else if (mantissa == 0) {
            bits = 0;
        } else {
            done = false;
        }
    }
}

// fpisa: leading one by a 5-step binary search and variable shifts (the
// proposed extended ALU has a two-operand shifter).
control NormalizeVariableShift(in bit<16> exponent, in bit<32> mantissa, in bit<8> flags,
                               out bit<32> bits) {
    SpecialResult() special;

    apply {
        bool done;
        special.apply(mantissa, flags, bits, done);
        if (!done) {
            bit<32> sign = mantissa & 0x80000000;
            bit<32> magnitude = mantissa;
            if (sign != 0) {
                magnitude = 0 - mantissa;  // |-2^31| = 2^31 still fits unsigned
            }
            bit<32> probe = magnitude;
            bit<8> leading_zeros = 0;
            if (probe[31:16] == 0) { leading_zeros = leading_zeros + 16; probe = probe << 16; }
            if (probe[31:24] == 0) { leading_zeros = leading_zeros + 8; probe = probe << 8; }
            if (probe[31:28] == 0) { leading_zeros = leading_zeros + 4; probe = probe << 4; }
            if (probe[31:30] == 0) { leading_zeros = leading_zeros + 2; probe = probe << 2; }
            if (probe[31:31] == 0) { leading_zeros = leading_zeros + 1; }
            bit<8> leading_one = 31 - leading_zeros;
            // E + p, to compare with 23 + biased without signed numbers
            bit<16> exponent_plus_p = exponent + (bit<16>)leading_one;
            if (exponent_plus_p >= 255 + 23) {
                bits = sign | 0x7F800000;
            } else if (exponent_plus_p >= 1 + 23) {
                bit<32> significand;
                if (leading_one > 23) {
                    significand = magnitude >> (leading_one - 23);
                } else {
                    significand = magnitude << (23 - leading_one);
                }
                bits = sign | (((bit<32>)(exponent_plus_p - 23)) << 23) | (significand & 0x007FFFFF);
            } else {
                // subnormal; here 1 <= E and the net shift E - 1 is a left shift
                bits = sign | (magnitude << (bit<8>)(exponent - 1));
            }
        }
    }
}

// fpisa_a: the leading one from a ternary (TCAM) table and constant shifts,
// as the paper's Tofino read-out does.
control NormalizeTables(in bit<16> exponent, in bit<32> mantissa, in bit<8> flags,
                        out bit<32> bits) {
    SpecialResult() special;
    LeadingOne() leading_one_table;
    SubnormalShift() subnormal_shift;

    apply {
        bool done;
        special.apply(mantissa, flags, bits, done);
        if (!done) {
            bit<32> sign = mantissa & 0x80000000;
            bit<32> magnitude = mantissa;
            if (sign != 0) {
                magnitude = 0 - mantissa;
            }
            bit<32> significand;
            bit<8> leading_one;
            leading_one_table.apply(magnitude, significand, leading_one);
            bit<16> exponent_plus_p = exponent + (bit<16>)leading_one;
            if (exponent_plus_p >= 255 + 23) {
                bits = sign | 0x7F800000;
            } else if (exponent_plus_p >= 1 + 23) {
                bits = sign | (((bit<32>)(exponent_plus_p - 23)) << 23) | (significand & 0x007FFFFF);
            } else {
                bit<32> fraction = magnitude;
                subnormal_shift.apply(fraction, (bit<8>)(exponent - 1));
                bits = sign | fraction;
            }
        }
    }
}

#endif
