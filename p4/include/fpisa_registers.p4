// FPISA with the proposed extended ALU (numerics section 2): exponent
// register = max of the exponents; the mantissa register may be shifted
// right by a variable distance before the add (the paper's RSAW:
// read-shift-add-write), or the incoming mantissa is shifted instead.
// BMv2 has variable shifts, which model the proposed two-operand shifter.
//
// Straight-line code (no pipeline nodes of their own): each register is read
// and written on every packet that reaches the lanes; without an update the
// value written back is the value read (a first arrival always updates, and
// it starts from E = 1, A = 0 instead of the value read).
#ifndef FPISA_FPISA_REGISTERS_P4
#define FPISA_FPISA_REGISTERS_P4

#include "headers.p4"

control FpisaExponentRegister(in bit<32> row, in bool first, in bool update, in bool contributes,
                              in bit<16> incoming, out bit<16> stored_before,
                              out bit<16> stored_after) {
    register<bit<16>>(POOL_ROWS) exponent_register;

    apply {
        // The first arrival resets the row to E = 1, A = 0 (a zero's
        // exponent), which is the same as empty; a special arriving first
        // leaves it there (the oracle's decision 1).
        exponent_register.read(stored_before, row);
        stored_before = SEL(16, first, 1, stored_before);
        stored_after = SEL(16, update && contributes && incoming > stored_before, incoming, stored_before);
        exponent_register.write(row, stored_after);
    }
}

control FpisaMantissaRegister(in bit<32> row, in bool first, in bool update, in bool contributes,
                              in bit<16> incoming_exponent, in bit<32> incoming_mantissa,
                              in bit<16> stored_exponent, out bit<32> stored_after,
                              out bool overflow) {
    register<bit<32>>(POOL_ROWS) mantissa_register;

    apply {
        bit<32> stored;
        mantissa_register.read(stored, row);
        stored = stored & ~MASK(32, first);
        // e > E: RSAW, the stored value moves right to the larger incoming
        // exponent; else the incoming value moves. Distances are clamped to 31
        // (0 or -1, like any larger distance).
        bool grow = incoming_exponent > stored_exponent;
        bit<16> distance = SEL(16, grow, incoming_exponent - stored_exponent,
                               stored_exponent - incoming_exponent);
        bit<8> shift = SEL(8, distance > 31, 31, (bit<8>)distance);
        bit<32> moving = SEL(32, grow, stored, incoming_mantissa);
        // arithmetic right shift with unsigned operations: the sign fills
        bit<32> shifted = (moving >> shift) | (~(32w0xFFFFFFFF >> shift) & MASK(32, moving[31:31] == 1));
        bit<32> staying = SEL(32, grow, incoming_mantissa, stored);
        bit<32> sum = staying + shifted;
        // two's-complement overflow: equal operand signs, other sum sign;
        // the add wraps like the hardware and the flag reports it
        bool fold = update && contributes;
        overflow = fold && staying[31:31] == shifted[31:31] && sum[31:31] != staying[31:31];
        stored_after = SEL(32, fold, sum, stored);
        mantissa_register.write(row, stored_after);
    }
}

#endif
