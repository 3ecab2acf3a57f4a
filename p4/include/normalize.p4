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
#include "lane_fields.p4"
#include "decode.p4"
#include "generated/shift_tables.p4"

// Inf/NaN flags of an element -> its result bits: NaN if NaN or both
// infinities were seen, else the infinity seen; without such a flag the
// finite result stays.
control SpecialResult(in bit<8> flags, inout bit<32> bits) {
    apply {
        bits = SELECT(32, (flags & (ELEMENT_POS_INF | ELEMENT_NEG_INF | ELEMENT_NAN)) != 0,
                      SELECT(32, (flags & ELEMENT_NAN) != 0
                                 || (flags & (ELEMENT_POS_INF | ELEMENT_NEG_INF)) == (ELEMENT_POS_INF | ELEMENT_NEG_INF),
                             RESULT_NAN,
                             SELECT(32, (flags & ELEMENT_POS_INF) != 0, RESULT_POS_INF, RESULT_NEG_INF)),
                      bits);
    }
}

// fpisa: the result bits (no Inf/NaN) of the registers in t.stored_exponent
// (E) and t.stored_mantissa (A), into t.bits. The leading one p of |A| by a
// search with variable shifts (the proposed extended ALU has a two-operand
// shifter): which byte (three comparisons), then halving (4, 2, 1). With
// m = FRACTION_BITS, q = E + p and d = max(q - (m + 1), 0): a normal result
// (q - m >= 1) is (d << m) + |A| * 2^(m - p), the leading one at bit m adding
// the 1 to the exponent field; a subnormal one (d = 0) is |A| * 2^(E - 1);
// both are (|A| << 32) >> (33 - E + d), truncating (rz). Straight-line, one
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
        t.bits = ((bit<32>)(t.exponent_plus_p - (FRACTION_BITS + 1)) << FRACTION_BITS)
                 * (bit<32>)(bit<1>)(t.exponent_plus_p > FRACTION_BITS + 1)
               + (bit<32>)(((bit<64>)t.magnitude << 32)
                           >> (bit<8>)(33 - (bit<16>)t.stored_exponent
                                       + (t.exponent_plus_p - (FRACTION_BITS + 1))
                                         * (bit<16>)(bit<1>)(t.exponent_plus_p > FRACTION_BITS + 1)));
        // E + p - m >= all-ones: Inf; the sign; A = 0 gives +0
        t.bits = (SELECT(32, t.exponent_plus_p >= EXPONENT_ALL_ONES + FRACTION_BITS, RESULT_POS_INF, t.bits)
                  | RESULT_SIGN(t.stored_mantissa))
               * (bit<32>)(bit<1>)(t.stored_mantissa != 0);
    }
}

// fpisa read-out of one lane of a row without Inf/NaN (the row's flag
// summary says so: element_flags.p4): registers -> IEEE bits -> wire order.
control FpisaReadout(inout bit<ELEMENT_BITS> value, in bit<32> row, inout fpisa_lane_t t)
                    (register<bit<8>> exponent_register, register<bit<32>> mantissa_register) {
    FpisaFinite() finite;
    WireOrder() swap;

    apply {
        exponent_register.read(t.stored_exponent, row);
        mantissa_register.read(t.stored_mantissa, row);
        finite.apply(t);
        swap.apply(t.bits, value);
    }
}

// The same for a row in which an Inf or NaN was seen: the element's flags
// decide first (NaN if NaN or both infinities, else the infinity seen).
control FpisaReadoutSpecial(inout bit<ELEMENT_BITS> value, in bit<32> row, inout fpisa_lane_t t)
                           (register<bit<8>> exponent_register, register<bit<32>> mantissa_register,
                            register<bit<8>> flags_register) {
    FpisaFinite() finite;
    SpecialResult() special;
    WireOrder() swap;

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
// Tofino read-out does, and the significand |A| * 2^s, s = min(m - p, E - 1),
// by constant shifts from two tables (shift_tables.p4): the leading one moved
// to bit m for a normal result (E + p - m >= 1), |A| << (E - 1) for a
// subnormal one. Then as in fpisa: exponent field (E + p - (m + 1) plus the
// leading one's carry), Inf, sign, zero; the element's Inf/NaN flags (bits
// 15..8 of the exponent register) decide first. t.row_flags collects the
// row's flags for the result header.
control FpisaAReadout(inout bit<ELEMENT_BITS> value, in bit<32> row, inout fpisa_a_lane_t t)
                     (register<bit<16>> exponent_register, register<bit<32>> mantissa_register) {
    LeadingOne() leading_one;
    NormalizeFine() normalize_fine;
    NormalizeCoarse() normalize_coarse;
    SpecialResult() special;
    WireOrder() swap;

    apply {
        exponent_register.read(t.stored_exponent, row);
        mantissa_register.read(t.stored_mantissa, row);
        t.magnitude = (bit<32>)(((int<32>)t.stored_mantissa ^ ((int<32>)t.stored_mantissa >> 31))
                                - ((int<32>)t.stored_mantissa >> 31));
        leading_one.apply(t.magnitude, t.leading_one);
        t.exponent_plus_p = (t.stored_exponent & 0xFF) + (bit<16>)t.leading_one;
        // s + NORMALIZE_OFFSET = min(m - p, E - 1) + NORMALIZE_OFFSET: the normal
        // branch iff E + p >= m + 1
        t.shift_key = SELECT(8, t.exponent_plus_p >= FRACTION_BITS + 1,
                             FRACTION_BITS + NORMALIZE_OFFSET - t.leading_one,
                             (bit<8>)t.stored_exponent + (NORMALIZE_OFFSET - 1));
        t.significand = (bit<64>)t.magnitude;
        normalize_fine.apply(t.significand, t.shift_key);
        normalize_coarse.apply(t.significand, t.shift_key);
        t.bits = ((bit<32>)(t.exponent_plus_p - (FRACTION_BITS + 1)) << FRACTION_BITS)
                 * (bit<32>)(bit<1>)(t.exponent_plus_p > FRACTION_BITS + 1)
               + (bit<32>)t.significand;
        t.bits = (SELECT(32, t.exponent_plus_p >= EXPONENT_ALL_ONES + FRACTION_BITS, RESULT_POS_INF, t.bits)
                  | RESULT_SIGN(t.stored_mantissa))
               * (bit<32>)(bit<1>)(t.stored_mantissa != 0);
        special.apply((bit<8>)(t.stored_exponent >> 8), t.bits);
        swap.apply(t.bits, value);
        t.row_flags = t.row_flags | (bit<8>)(t.stored_exponent >> 8);
    }
}

#endif
