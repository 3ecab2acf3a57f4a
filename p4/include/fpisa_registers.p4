// FPISA with the proposed extended ALU (numerics section 2): exponent
// register = max of the exponents; the mantissa register may be shifted
// right by a variable distance before the add (the paper's RSAW:
// read-shift-add-write), or the incoming mantissa is shifted instead.
// BMv2 has variable shifts, which model the proposed two-operand shifter.
#ifndef FPISA_FPISA_REGISTERS_P4
#define FPISA_FPISA_REGISTERS_P4

#include "headers.p4"

// Arithmetic right shift of a two's-complement value held in bit<32>,
// distance 0..31, written with unsigned operations only.
control ShiftRightArithmetic(inout bit<32> value, in bit<8> distance) {
    apply {
        bit<32> sign = value & 0x80000000;
        value = value >> distance;
        if (sign != 0) {
            value = value | ~(32w0xFFFFFFFF >> distance);
        }
    }
}

control FpisaExponentRegister(in bit<32> row, in bool first, in bool update, in bool contributes,
                              in bit<16> incoming, out bit<16> stored_before,
                              out bit<16> stored_after) {
    register<bit<16>>(POOL_ROWS) exponent_register;

    apply {
        // The first arrival resets the row to E = 1, A = 0 (a zero's
        // exponent), which is the same as empty; a special arriving first
        // leaves it there (the oracle's decision 1).
        bit<16> stored = 1;
        if (!first) {
            exponent_register.read(stored, row);
        }
        stored_before = stored;
        if (update) {
            if (contributes && incoming > stored) {
                stored = incoming;
            }
            exponent_register.write(row, stored);
        }
        stored_after = stored;
    }
}

control FpisaMantissaRegister(in bit<32> row, in bool first, in bool update, in bool contributes,
                              in bit<16> incoming_exponent, in bit<32> incoming_mantissa,
                              in bit<16> stored_exponent, out bit<32> stored_after,
                              out bool overflow) {
    register<bit<32>>(POOL_ROWS) mantissa_register;
    ShiftRightArithmetic() align_stored;
    ShiftRightArithmetic() align_incoming;

    apply {
        bit<32> stored = 0;
        overflow = false;
        if (!first) {
            mantissa_register.read(stored, row);
        }
        if (update && contributes) {
            bit<32> addend = incoming_mantissa;
            bit<16> distance;
            if (incoming_exponent > stored_exponent) {
                // RSAW: align the stored value to the larger incoming exponent
                distance = incoming_exponent - stored_exponent;
                if (distance > 31) {
                    distance = 31;  // 0 or -1, like any larger distance
                }
                align_stored.apply(stored, (bit<8>)distance);
            } else {
                distance = stored_exponent - incoming_exponent;
                if (distance > 31) {
                    distance = 31;
                }
                align_incoming.apply(addend, (bit<8>)distance);
            }
            bit<32> sum = stored + addend;
            // two's-complement overflow: equal operand signs, other sum sign;
            // the add wraps like the hardware and the flag reports it
            overflow = stored[31:31] == addend[31:31] && sum[31:31] != stored[31:31];
            stored = sum;
        }
        if (update) {
            mantissa_register.write(row, stored);
        }
        stored_after = stored;
    }
}

#endif
