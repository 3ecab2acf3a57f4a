// FPISA-A (numerics section 3): what a Tofino-class switch can do. A stored
// register cannot be shifted before the add, and shifts are constant: the
// shift distance selects one constant-shift action in a table
// (generated/shift_tables.p4). So only the incoming value moves:
//   E == 0 (no value yet)  -> write: E = e, A = S
//   e <= E                 -> A += S >> (E - e)            (table-selected shift)
//   0 < e - E <= headroom  -> A += S << (e - E), E stays   (into the headroom)
//   e - E > headroom       -> overwrite: E = e, A = S      (the stored value is lost)
// Adds saturate; subnormals and zeros are flushed (contribute nothing).
#ifndef FPISA_FPISA_A_REGISTERS_P4
#define FPISA_FPISA_A_REGISTERS_P4

#include "headers.p4"
#include "generated/shift_tables.p4"

const bit<8> ALIGN_NONE = 0;
const bit<8> ALIGN_WRITE = 1;
const bit<8> ALIGN_OVERWRITE = 2;
const bit<8> ALIGN_RIGHT = 3;
const bit<8> ALIGN_LEFT = 4;

control FpisaAExponentRegister(in bit<32> row, in bool first, in bool update, in bool contributes,
                               in bit<16> incoming, out bit<8> alignment, out bit<8> distance,
                               out bit<16> stored_after) {
    register<bit<16>>(POOL_ROWS) exponent_register;

    apply {
        bit<16> stored = 0;  // 0: no value yet
        if (!first) {
            exponent_register.read(stored, row);
        }
        alignment = ALIGN_NONE;
        distance = 0;
        if (update && contributes) {
            if (stored == 0) {
                alignment = ALIGN_WRITE;
                stored = incoming;
            } else if (incoming > stored && incoming - stored > (bit<16>)HEADROOM_BITS) {
                alignment = ALIGN_OVERWRITE;
                stored = incoming;
            } else if (incoming <= stored) {
                alignment = ALIGN_RIGHT;
                bit<16> right = stored - incoming;
                if (right > 255) {
                    right = 255;  // the table's default action covers >= 31
                }
                distance = (bit<8>)right;
            } else {
                alignment = ALIGN_LEFT;
                distance = (bit<8>)(incoming - stored);
            }
        }
        if (update) {
            exponent_register.write(row, stored);
        }
        stored_after = stored;
    }
}

control FpisaAMantissaRegister(in bit<32> row, in bool first, in bool update,
                               in bit<8> alignment, in bit<8> distance,
                               in bit<32> incoming_mantissa, out bit<32> stored_after,
                               out bool overflow) {
    register<bit<32>>(POOL_ROWS) mantissa_register;
    AlignIncomingRight() align_right;
    AlignIncomingLeft() align_left;

    apply {
        bit<32> stored = 0;
        overflow = false;
        if (!first) {
            mantissa_register.read(stored, row);
        }
        if (alignment == ALIGN_WRITE || alignment == ALIGN_OVERWRITE) {
            stored = incoming_mantissa;
        } else if (alignment == ALIGN_RIGHT || alignment == ALIGN_LEFT) {
            bit<32> addend = incoming_mantissa;
            if (alignment == ALIGN_RIGHT) {
                align_right.apply(addend, distance);
            } else {
                align_left.apply(addend, distance);
            }
            bit<32> sum = stored + addend;
            if (stored[31:31] == addend[31:31] && sum[31:31] != stored[31:31]) {
                // saturate to the largest magnitude of the sign
                overflow = true;
                if (stored[31:31] == 1) {
                    sum = 0x80000000;
                } else {
                    sum = 0x7FFFFFFF;
                }
            }
            stored = sum;
        }
        if (update) {
            mantissa_register.write(row, stored);
        }
        stored_after = stored;
    }
}

#endif
