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
// The register belongs to the lanes control (a constructor argument), so
// the fold variants and the read-out (normalize.p4) share it; the working
// fields are the lanes' shared fpisa_lane_t (lanes.p4).
//
// One register per lane and row holds the lane's whole state (FPISA_STATE):
// the element flags (bits 47..40), the exponent E (39..32) and the mantissa
// A (31..0). One register instead of three: BMv2 locks every register array
// an action touches, per packet, at a cost that grows faster than their
// number (docs/p4.md, fourth round), and every read or write is a primitive.
// A first arrival writes the whole state, so the flags are always this
// round's.
//
// Mantissas are two's complement in bit<32> fields, cast to int<32> for the
// shifts: BMv2 evaluates `>>` of a signed value as a flooring (arithmetic)
// shift for any distance, so distances need no clamp (>= 31 gives 0 or -1,
// as numerics section 2 requires) and the aligned sum is one expression. Of
// the two distances one is 0: the value with the smaller exponent moves.

#ifndef FPISA_FPISA_REGISTERS_P4
#define FPISA_FPISA_REGISTERS_P4

#include "headers.p4"
#include "lane_fields.p4"
#include "decode.p4"

// E = e, A = S, flags 0 (the implicit reset; numerics section 2).
control FpisaFirst(in bit<ELEMENT_BITS> value, in bit<32> row, inout fpisa_lane_t t)
                  (register<bit<48>> state_register) {
    apply {
        t.state = ((bit<48>)DECODE_EXPONENT(value) << 32) | (bit<48>)DECODE_MANTISSA(value);
        state_register.write(row, t.state);
    }
}

// E' = max(e, E); A' = (A >> (E' - E)) + (S >> (E' - e)); the flags stay. No
// overflow: with at most MAX_WORKERS (32) values of magnitude below 2^(m+1)
// in a row (fp32 2^24), |A| stays below 2^29 (fp32's 2^7 headroom;
// p4/__init__.py checks it for every format), so the wrapping add never
// wraps and the flags do not change.
control FpisaNext(in bit<ELEMENT_BITS> value, in bit<32> row, inout fpisa_lane_t t)
                 (register<bit<48>> state_register) {
    apply {
        state_register.read(t.state, row);
        t.exponent = DECODE_EXPONENT(value);
        t.stored_exponent = STATE_EXPONENT(t.state);
        t.new_exponent = SELECT(8, t.exponent > t.stored_exponent, t.exponent, t.stored_exponent);
        t.state = (t.state & STATE_FLAGS_MASK) | ((bit<48>)t.new_exponent << 32)
                | (bit<48>)(bit<32>)(((int<32>)STATE_MANTISSA(t.state) >> (t.new_exponent - t.stored_exponent))
                                     + ((int<32>)DECODE_MANTISSA(value) >> (t.new_exponent - t.exponent)));
        state_register.write(row, t.state);
    }
}

// Every case of numerics section 2, with the element flags: the first
// arrival starts from E = 1, A = 0 (a zero's exponent, the same as empty; a
// special arriving first leaves it there: the oracle's decision 1) and no
// flags; an Inf/NaN contributes e = 0, S = 0 (so E and A stay) and sets its
// flag; a wrapping add sets ELEMENT_OVERFLOW.
control FpisaGeneral(in bit<ELEMENT_BITS> value, in bit<32> row, in bool first, inout fpisa_lane_t t)
                    (register<bit<48>> state_register) {
    DecodeElement() decode;
    SpecialElement() special;
    apply {
        state_register.read(t.state, row);
        decode.apply(value, t.exponent, t.mantissa);
        special.apply(value, t.special);
        t.exponent = t.exponent * (bit<8>)(bit<1>)(t.special == 0);
        t.mantissa = t.mantissa * (bit<32>)(bit<1>)(t.special == 0);
        t.stored_exponent = SELECT(8, first, 1, STATE_EXPONENT(t.state));
        t.stored_mantissa = STATE_MANTISSA(t.state) * (bit<32>)(bit<1>)!first;
        t.new_exponent = SELECT(8, t.exponent > t.stored_exponent, t.exponent, t.stored_exponent);
        t.moved_stored = (bit<32>)((int<32>)t.stored_mantissa >> (t.new_exponent - t.stored_exponent));
        t.moved_incoming = (bit<32>)((int<32>)t.mantissa >> (t.new_exponent - t.exponent));
        t.new_mantissa = t.moved_stored + t.moved_incoming;
        // two's-complement overflow: the sum's sign differs from both addends'
        t.flags = STATE_FLAGS(t.state) * (bit<8>)(bit<1>)!first | t.special
                | (ELEMENT_OVERFLOW * (bit<8>)(((t.moved_stored ^ t.new_mantissa)
                                                & (t.moved_incoming ^ t.new_mantissa)) >> 31));
        t.state = FPISA_STATE(t.flags, t.new_exponent, t.new_mantissa);
        state_register.write(row, t.state);
        t.row_flags = t.row_flags | t.flags;
    }
}

#endif
