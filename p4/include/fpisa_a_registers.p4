// FPISA-A (numerics section 3): what a Tofino-class switch can do. A stored
// register cannot be shifted before the add, and shifts are constant: the
// shift distance selects constant-shift actions in tables
// (generated/shift_tables.p4: a coarse and a fine table per lane). So only
// the incoming value moves:
//   E == 0 (no value yet)  -> write: E = e, A = S
//   e <= E                 -> A += S >> (E - e)            (table-selected shifts)
//   0 < e - E <= headroom  -> A += S << (e - E), E stays   (into the headroom)
//   e - E > headroom       -> overwrite: E = e, A = S      (the stored value is lost)
// Adds saturate; subnormals and zeros are flushed (contribute nothing).
//
// Per lane two registers per row: the exponent register holds E in bits 7..0
// (0: no value yet) and the element's sticky flags (ELEMENT_*) in bits
// 15..8, so the fold keeps the flags without a register of their own; the
// mantissa register holds A. As in fpisa (fpisa_registers.p4) one choice
// per packet, straight-line apart from the shift tables, with the lanes'
// shared working fields (lane_fields.p4):
//   FpisaAFirst    first arrival of a round, no Inf/NaN in the packet
//   FpisaALane     every other fold: read the registers, decode, FpisaAFold
// A packet with an Inf/NaN goes through FpisaALane too (one copy of each
// lane's shift tables, not one per variant: p4c's time grows with the
// tables and actions of all 48 lanes), prepared and finished by two passes
// that only such a packet runs:
//   FpisaANeutral  before: every Inf/NaN element becomes a flushed value that
//                  carries its ELEMENT_* flag in its low fraction bits
//                  (contributes nothing, like any flushed value), a
//                  subnormal becomes 0 (it contributes nothing either; its
//                  fraction must not read as a flag); a first arrival resets
//                  the registers to "no value" (E = 0, A = 0, no flags)
//   FpisaASpecialFlags  after: ORs each element's carried flag into its
//                  exponent register (flags are sticky; the OR's order does
//                  not matter)
#ifndef FPISA_FPISA_A_REGISTERS_P4
#define FPISA_FPISA_A_REGISTERS_P4

#include "headers.p4"
#include "lane_fields.p4"
#include "decode.p4"
#include "generated/shift_tables.p4"

// The first arrival resets to "no value" and applies the rules to its own
// value: E = e, A = S (E = 0, A = 0 for a flushed zero or subnormal), flags 0.
control FpisaAFirst(in bit<ELEMENT_BITS> value, in bit<32> row, inout fpisa_a_lane_t t)
                   (register<bit<16>> exponent_register, register<bit<32>> mantissa_register) {
    DecodeNormalElement() decode;

    apply {
        decode.apply(value, t.exponent, t.addend);
        exponent_register.write(row, t.exponent);
        t.new_mantissa = (bit<32>)t.addend;
        mantissa_register.write(row, t.new_mantissa);
    }
}

// The exponent register decides, the mantissa register follows, from the
// registers in t.stored_exponent / t.stored_mantissa and the incoming
// t.exponent / t.addend (e = 0, S = 0 contributes nothing: it is aligned
// right like a smaller value and adds 0).
control FpisaAFold(in bit<32> row, inout fpisa_a_lane_t t)
                  (register<bit<16>> exponent_register, register<bit<32>> mantissa_register) {
    AlignCoarse() coarse;
    AlignFine() fine;

    apply {
        t.alignment = SELECT(8, t.exponent > (t.stored_exponent & 0xFF),
                          SELECT(8, (t.stored_exponent & 0xFF) == 0, ALIGN_WRITE,
                              SELECT(8, t.exponent - (t.stored_exponent & 0xFF) > (bit<16>)HEADROOM_BITS,
                                     ALIGN_OVERWRITE, ALIGN_LEFT)),
                          ALIGN_RIGHT);
        // (E - e) mod 256, the tables' distance (E's flag bits do not reach the low byte)
        t.distance = (bit<8>)(t.stored_exponent - t.exponent);
        coarse.apply(t.addend, t.alignment, t.distance);
        fine.apply(t.addend, t.alignment, t.distance);
        // an add (ALIGN_RIGHT, ALIGN_LEFT) or the incoming value alone (a write)
        t.new_mantissa = (bit<32>)t.addend
                       + t.stored_mantissa * (bit<32>)(bit<1>)(t.alignment >= ALIGN_RIGHT);
        // overflow: the sum's sign differs from both addends' (in a write the
        // incoming value equals the sum, so nothing is flagged)
        t.flags = ELEMENT_OVERFLOW * (bit<8>)(((t.stored_mantissa ^ t.new_mantissa)
                                               & ((bit<32>)t.addend ^ t.new_mantissa)) >> 31)
                | ELEMENT_OVERWRITE * (bit<8>)(bit<1>)(t.alignment == ALIGN_OVERWRITE);
        // saturate to the largest magnitude of the operands' sign
        t.new_mantissa = SELECT(32, (t.flags & ELEMENT_OVERFLOW) != 0,
                                32w0x7FFFFFFF + (t.stored_mantissa >> 31), t.new_mantissa);
        t.stored_exponent = (t.stored_exponent & 0xFF00) | ((bit<16>)t.flags << 8)
                          | SELECT(16, t.alignment == ALIGN_WRITE || t.alignment == ALIGN_OVERWRITE,
                                   t.exponent, t.stored_exponent & 0xFF);
        exponent_register.write(row, t.stored_exponent);
        mantissa_register.write(row, t.new_mantissa);
    }
}

control FpisaALane(in bit<ELEMENT_BITS> value, in bit<32> row, inout fpisa_a_lane_t t)
                  (register<bit<16>> exponent_register, register<bit<32>> mantissa_register) {
    DecodeNormalElement() decode;
    FpisaAFold(exponent_register, mantissa_register) fold;
    apply {
        exponent_register.read(t.stored_exponent, row);
        mantissa_register.read(t.stored_mantissa, row);
        decode.apply(value, t.exponent, t.addend);
        fold.apply(row, t);
    }
}

// A flushed value (exponent field 0) that carries the flag f (ELEMENT_POS_INF,
// NEG_INF or NAN: bits 2..0) in its fraction, and that flag back.
#define NEUTRAL_CARRYING(f) ((bit<ELEMENT_BITS>)(f) << WIRE_BIT0)
#define CARRIED_FLAG(w) \
    ((bit<8>)((w) >> WIRE_BIT0) & 7 & ((bit<8>)0 - (bit<8>)(bit<1>)(((w) & (bit<ELEMENT_BITS>)WIRE_EXPONENT) == 0)))

// Before FpisaALane, in a packet with an Inf/NaN (see the top).
control FpisaANeutral(inout bit<ELEMENT_BITS> value, in bit<32> row, in bool first, inout fpisa_a_lane_t t)
                     (register<bit<16>> exponent_register, register<bit<32>> mantissa_register) {
    SpecialElement() special;
    apply {
        special.apply(value, t.special);
        value = SELECT(ELEMENT_BITS, t.special != 0, NEUTRAL_CARRYING(t.special),
                       value * (bit<ELEMENT_BITS>)(bit<1>)((value & (bit<ELEMENT_BITS>)WIRE_EXPONENT) != 0));
        // a first arrival: no value yet (the registers' other rows untouched)
        exponent_register.read(t.stored_exponent, row);
        mantissa_register.read(t.stored_mantissa, row);
        t.stored_exponent = t.stored_exponent * (bit<16>)(bit<1>)!first;
        t.stored_mantissa = t.stored_mantissa * (bit<32>)(bit<1>)!first;
        exponent_register.write(row, t.stored_exponent);
        mantissa_register.write(row, t.stored_mantissa);
    }
}

// After FpisaALane, in a packet with an Inf/NaN: the element's flag.
control FpisaASpecialFlags(in bit<ELEMENT_BITS> value, in bit<32> row, inout fpisa_a_lane_t t)
                          (register<bit<16>> exponent_register) {
    apply {
        exponent_register.read(t.stored_exponent, row);
        t.stored_exponent = t.stored_exponent | ((bit<16>)CARRIED_FLAG(value) << 8);
        exponent_register.write(row, t.stored_exponent);
    }
}

#endif
