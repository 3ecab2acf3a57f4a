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
#include "lane_fields.p4"
#include "decode_fp32.p4"
#include "generated/shift_tables.p4"

const bit<32> FP32_POS_INF = 0x7F800000;
const bit<32> FP32_NEG_INF = 0xFF800000;
const bit<32> FP32_QUIET_NAN = 0x7FC00000;

// Inf/NaN flags of an element -> its result bits: NaN if NaN or both
// infinities were seen, else the infinity seen; without such a flag the
// finite result stays.
control SpecialResult(in bit<8> flags, inout bit<32> bits) {
    apply {
        bits = SELECT(32, (flags & (ELEMENT_POS_INF | ELEMENT_NEG_INF | ELEMENT_NAN)) != 0,
                      SELECT(32, (flags & ELEMENT_NAN) != 0
                                 || (flags & (ELEMENT_POS_INF | ELEMENT_NEG_INF)) == (ELEMENT_POS_INF | ELEMENT_NEG_INF),
                             FP32_QUIET_NAN,
                             SELECT(32, (flags & ELEMENT_POS_INF) != 0, FP32_POS_INF, FP32_NEG_INF)),
                      bits);
    }
}

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

// fpisa: the result bits (no Inf/NaN) of the registers in t.stored_exponent
// (E) and t.stored_mantissa (A), into t.bits. The leading one p of |A| by a
// search with variable shifts (the proposed extended ALU has a two-operand
// shifter): which byte (three comparisons), then halving (4, 2, 1). With
// q = E + p and d = max(q - 24, 0): a normal result (q - 23 >= 1) is
// (d << 23) + |A| * 2^(23 - p), the leading one at bit 23 adding the 1 to
// the exponent field; a subnormal one (d = 0) is |A| * 2^(E - 1); both are
// (|A| << 32) >> (33 - E + d), truncating (rz). Straight-line, one
// assignment per step (docs/p4.md "Speed on BMv2").
control FpisaFinite(inout fpisa_lane_t t) {
    apply {
        // |-2^31| = 2^31 still fits unsigned
        t.magnitude = (bit<32>)(((int<32>)t.stored_mantissa ^ ((int<32>)t.stored_mantissa >> 31))
                                - ((int<32>)t.stored_mantissa >> 31));
        t.leading_one = ((bit<8>)(bit<1>)(t.magnitude >= 32w0x100) + (bit<8>)(bit<1>)(t.magnitude >= 32w0x10000)
                         + (bit<8>)(bit<1>)(t.magnitude >= 32w0x1000000)) << 3;
        t.leading_one = t.leading_one | ((bit<8>)(bit<1>)((t.magnitude >> t.leading_one) >= 32w0x10) << 2);
        t.leading_one = t.leading_one | ((bit<8>)(bit<1>)((t.magnitude >> t.leading_one) >= 32w0x4) << 1);
        t.leading_one = t.leading_one | (bit<8>)(bit<1>)((t.magnitude >> t.leading_one) >= 32w0x2);
        t.exponent_plus_p = (bit<16>)t.stored_exponent + (bit<16>)t.leading_one;
        t.bits = ((bit<32>)(t.exponent_plus_p - 24) << FP32_FRACTION_BITS) * (bit<32>)(bit<1>)(t.exponent_plus_p > 24)
               + (bit<32>)(((bit<64>)t.magnitude << 32)
                           >> (bit<8>)(33 - (bit<16>)t.stored_exponent
                                       + (t.exponent_plus_p - 24) * (bit<16>)(bit<1>)(t.exponent_plus_p > 24)));
        // E + p - 23 >= 255: Inf; the sign; A = 0 gives +0
        t.bits = (SELECT(32, t.exponent_plus_p >= 255 + 23, FP32_POS_INF, t.bits)
                  | (t.stored_mantissa & 0x80000000))
               * (bit<32>)(bit<1>)(t.stored_mantissa != 0);
    }
}

// fpisa read-out of one lane of a row without Inf/NaN (the row's flag
// summary says so: element_flags.p4): registers -> fp32 bits -> wire order.
control FpisaReadout(inout bit<32> value, in bit<32> row, inout fpisa_lane_t t)
                    (register<bit<8>> exponent_register, register<bit<32>> mantissa_register) {
    FpisaFinite() finite;
    SwapBytes32() swap;

    apply {
        exponent_register.read(t.stored_exponent, row);
        mantissa_register.read(t.stored_mantissa, row);
        finite.apply(t);
        swap.apply(t.bits, value);
    }
}

// The same for a row in which an Inf or NaN was seen: the element's flags
// decide first (NaN if NaN or both infinities, else the infinity seen).
control FpisaReadoutSpecial(inout bit<32> value, in bit<32> row, inout fpisa_lane_t t)
                           (register<bit<8>> exponent_register, register<bit<32>> mantissa_register,
                            register<bit<8>> flags_register) {
    FpisaFinite() finite;
    SpecialResult() special;
    SwapBytes32() swap;

    apply {
        exponent_register.read(t.stored_exponent, row);
        mantissa_register.read(t.stored_mantissa, row);
        flags_register.read(t.flags, row);
        finite.apply(t);
        special.apply(t.flags, t.bits);
        swap.apply(t.bits, value);
    }
}

// fpisa_a: the leading one p from a ternary (TCAM) table, as the paper's
// Tofino read-out does, and the significand |A| * 2^s, s = min(23 - p, E - 1),
// by constant shifts from two tables (shift_tables.p4): the leading one moved
// to bit 23 for a normal result (E + p - 23 >= 1), |A| << (E - 1) for a
// subnormal one. Then as in fpisa: exponent field (E + p - 24 plus the
// leading one's carry), Inf, sign, zero; the element's Inf/NaN flags (bits
// 15..8 of the exponent register) decide first. t.row_flags collects the
// row's flags for the result header.
control FpisaAReadout(inout bit<32> value, in bit<32> row, inout fpisa_a_lane_t t)
                     (register<bit<16>> exponent_register, register<bit<32>> mantissa_register) {
    LeadingOne() leading_one;
    NormalizeFine() normalize_fine;
    NormalizeCoarse() normalize_coarse;
    SpecialResult() special;
    SwapBytes32() swap;

    apply {
        exponent_register.read(t.stored_exponent, row);
        mantissa_register.read(t.stored_mantissa, row);
        t.magnitude = (bit<32>)(((int<32>)t.stored_mantissa ^ ((int<32>)t.stored_mantissa >> 31))
                                - ((int<32>)t.stored_mantissa >> 31));
        leading_one.apply(t.magnitude, t.leading_one);
        t.exponent_plus_p = (t.stored_exponent & 0xFF) + (bit<16>)t.leading_one;
        // s + NORMALIZE_OFFSET = min(23 - p, E - 1) + 8: the normal branch iff E + p >= 24
        t.shift_key = SELECT(8, t.exponent_plus_p >= 24, 31 - t.leading_one,
                             (bit<8>)t.stored_exponent + 7);
        t.significand = (bit<64>)t.magnitude;
        normalize_fine.apply(t.significand, t.shift_key);
        normalize_coarse.apply(t.significand, t.shift_key);
        t.bits = ((bit<32>)(t.exponent_plus_p - 24) << FP32_FRACTION_BITS) * (bit<32>)(bit<1>)(t.exponent_plus_p > 24)
               + (bit<32>)t.significand;
        t.bits = (SELECT(32, t.exponent_plus_p >= 255 + 23, FP32_POS_INF, t.bits)
                  | (t.stored_mantissa & 0x80000000))
               * (bit<32>)(bit<1>)(t.stored_mantissa != 0);
        special.apply((bit<8>)(t.stored_exponent >> 8), t.bits);
        swap.apply(t.bits, value);
        t.row_flags = t.row_flags | (bit<8>)(t.stored_exponent >> 8);
    }
}

#endif
