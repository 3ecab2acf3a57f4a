// One lane = one element's fold into its registers, wired from the
// per-concern controls. generated/<program>_lanes.p4 instantiates a lane per
// payload element (P4 has no loops), each with its own register arrays, and
// for the float programs applies the read-out controls (normalize.p4) of all
// lanes under a single `if (meta.readout)`.
//
// BMv2 cost: p4c makes a pipeline node of every `if` in an apply block and of
// every run of statements between two of them (a table with a synthesized
// action), and BMv2 walks the nodes one by one. The lanes are therefore
// straight-line code (SEL, headers.p4): a packet runs all lanes' folds as one action (fpisa,
// switchml) or one action and one shift table per lane (fpisa_a, whose shifts
// must be table-selected constant shifts).
#ifndef FPISA_LANES_P4
#define FPISA_LANES_P4

#include "headers.p4"
#include "decode.p4"
#include "element_flags.p4"
#include "fpisa_registers.p4"
#include "fpisa_a_registers.p4"
#include "normalize.p4"

// SwitchML: int32 (big-endian on the wire, the header field order) wrapping
// sum, or signed max for the exponent exchange (mode int-max). One register
// per element (a constructor argument); generated/switchml_lanes.p4 picks
// one variant per packet for all lanes. The folds compute into the packet's
// element and write that to the register: the packet that completes the row
// then carries the result, and any other packet is dropped after the lanes.
control SwitchmlFirst(in bit<32> value, in bit<32> row)(register<bit<32>> value_register) {
    apply {
        value_register.write(row, value);  // the implicit reset
    }
}

control SwitchmlSum(inout bit<32> value, in bit<32> row, inout bit<32> stored)
                   (register<bit<32>> value_register) {
    apply {
        value_register.read(stored, row);
        value = value + stored;  // wraps like the switch's ALU
        value_register.write(row, value);
    }
}

control SwitchmlMax(inout bit<32> value, in bit<32> row, inout bit<32> stored)
                   (register<bit<32>> value_register) {
    apply {
        value_register.read(stored, row);
        // signed max on unsigned bits: flipping the sign bits orders them
        value = SELECT(32, (value ^ 0x80000000) > (stored ^ 0x80000000), value, stored);
        value_register.write(row, value);
    }
}

// a retransmission: the row's result again
control SwitchmlResult(out bit<32> value, in bit<32> row)(register<bit<32>> value_register) {
    apply {
        value_register.read(value, row);
    }
}

#endif
