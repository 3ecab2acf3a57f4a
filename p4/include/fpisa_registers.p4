// FPISA with the proposed extended ALU (numerics section 2): exponent
// register = max of the exponents; the mantissa register may be shifted
// right by a variable distance before the add (the paper's RSAW:
// read-shift-add-write), or the incoming mantissa is shifted instead.
// BMv2 has variable shifts, which model the proposed two-operand shifter.
//
// One lane's fold, in three variants; generated/fpisa_lanes.p4 picks one per
// packet (one BMv2 node for all 48 lanes), so each is straight-line code
// without the selects the others need:
//   FpisaFirst    first arrival of a round, no Inf/NaN in the packet
//   FpisaNext     later arrival, no Inf/NaN in the packet
//   FpisaGeneral  any packet with an Inf/NaN (and the per-element flags)
// The registers belong to the lanes control (constructor arguments), so the
// fold variants and the read-out (normalize.p4) share them; the working
// fields are the lanes' shared fpisa_lane_t (lanes.p4).
//
// Mantissas are two's complement in bit<32> fields and registers, cast to
// int<32> for the shifts: BMv2 evaluates `>>` of a signed value as a flooring
// (arithmetic) shift for any distance, so distances need no clamp (>= 31
// gives 0 or -1, as numerics section 2 requires) and the aligned sum is one
// expression. Of the two distances one is 0: the value with the smaller
// exponent moves.
#ifndef FPISA_FPISA_REGISTERS_P4
#define FPISA_FPISA_REGISTERS_P4

#include "headers.p4"
#include "lane_fields.p4"
#include "decode.p4"

// E = e, A = S (the implicit reset; numerics section 2). The element flags
// are cleared by clearing the row's flag summary (element_flags.p4).
control FpisaFirst(in bit<ELEMENT_BITS> value, in bit<32> row, inout fpisa_lane_t t)
                  (register<bit<8>> exponent_register, register<bit<32>> mantissa_register) {
    DecodeElement() decode;

    apply {
        decode.apply(value, t.exponent, t.mantissa);
        exponent_register.write(row, t.exponent);
        mantissa_register.write(row, t.mantissa);
    }
}

// E' = max(e, E); A' = (A >> (E' - E)) + (S >> (E' - e)). No overflow: with
// at most MAX_WORKERS (32) values of magnitude below 2^(m+1) in a row (fp32
// 2^24), |A| stays below 2^29 (fp32's 2^7 headroom; p4/__init__.py checks it
// for every format), so the wrapping add never wraps and the flags do not
// change.
control FpisaNext(in bit<ELEMENT_BITS> value, in bit<32> row, inout fpisa_lane_t t)
                 (register<bit<8>> exponent_register, register<bit<32>> mantissa_register) {
    apply {
        exponent_register.read(t.stored_exponent, row);
        mantissa_register.read(t.stored_mantissa, row);
        t.exponent = DECODE_EXPONENT(value);
        t.new_exponent = SELECT(8, t.exponent > t.stored_exponent, t.exponent, t.stored_exponent);
        // S inline (used once): one assignment fewer, each a primitive with a
        // field write, which costs BMv2 about as much as five operations
        t.new_mantissa = (bit<32>)(((int<32>)t.stored_mantissa >> (t.new_exponent - t.stored_exponent))
                                   + ((int<32>)DECODE_MANTISSA(value) >> (t.new_exponent - t.exponent)));
        exponent_register.write(row, t.new_exponent);
        mantissa_register.write(row, t.new_mantissa);
    }
}

// Every case of numerics section 2, with the element flags: the first
// arrival starts from E = 1, A = 0 (a zero's exponent, the same as empty; a
// special arriving first leaves it there: the oracle's decision 1); an
// Inf/NaN contributes e = 0, S = 0 (so E and A stay) and sets its flag; a
// wrapping add sets ELEMENT_OVERFLOW. t.flags_valid (per packet): whether
// the per-lane flag registers hold this round's flags (element_flags.p4).
control FpisaGeneral(in bit<ELEMENT_BITS> value, in bit<32> row, in bool first, inout fpisa_lane_t t)
                    (register<bit<8>> exponent_register, register<bit<32>> mantissa_register,
                     register<bit<8>> flags_register) {
    DecodeElement() decode;
    SpecialElement() special;

    apply {
        exponent_register.read(t.stored_exponent, row);
        mantissa_register.read(t.stored_mantissa, row);
        flags_register.read(t.flags, row);
        decode.apply(value, t.exponent, t.mantissa);
        special.apply(value, t.special);
        t.exponent = t.exponent * (bit<8>)(bit<1>)(t.special == 0);
        t.mantissa = t.mantissa * (bit<32>)(bit<1>)(t.special == 0);
        t.stored_exponent = SELECT(8, first, 1, t.stored_exponent);
        t.stored_mantissa = t.stored_mantissa * (bit<32>)(bit<1>)!first;
        t.new_exponent = SELECT(8, t.exponent > t.stored_exponent, t.exponent, t.stored_exponent);
        t.moved_stored = (bit<32>)((int<32>)t.stored_mantissa >> (t.new_exponent - t.stored_exponent));
        t.moved_incoming = (bit<32>)((int<32>)t.mantissa >> (t.new_exponent - t.exponent));
        t.new_mantissa = t.moved_stored + t.moved_incoming;
        // two's-complement overflow: the sum's sign differs from both addends'
        t.flags = t.flags * (bit<8>)(bit<1>)t.flags_valid | t.special
                | (ELEMENT_OVERFLOW * (bit<8>)(((t.moved_stored ^ t.new_mantissa)
                                                & (t.moved_incoming ^ t.new_mantissa)) >> 31));
        exponent_register.write(row, t.new_exponent);
        mantissa_register.write(row, t.new_mantissa);
        flags_register.write(row, t.flags);
        t.row_flags = t.row_flags | t.flags;
    }
}

#endif
