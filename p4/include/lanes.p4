// One lane = the whole per-element pipeline of a program, wired from the
// per-concern controls. generated/<program>_lanes.p4 instantiates a lane per
// payload element (P4 has no loops), each with its own register arrays.
#ifndef FPISA_LANES_P4
#define FPISA_LANES_P4

#include "headers.p4"
#include "decode_fp32.p4"
#include "element_flags.p4"
#include "fpisa_registers.p4"
#include "fpisa_a_registers.p4"
#include "normalize.p4"

control FpisaLane(inout bit<32> value, inout bit<64> raw_mantissa, inout bit<16> raw_exponent,
                  inout metadata_t meta) {
    DecodeFp32() decode;
    FpisaExponentRegister() exponent_register;
    FpisaMantissaRegister() mantissa_register;
    ElementFlags() element_flags;
    NormalizeVariableShift() normalize;
    SwapBytes32() to_wire;
    SummarizeFlags() summarize;
    RawRegisters() raw;

    apply {
        bit<16> incoming_exponent;
        bit<32> incoming_mantissa;
        bit<8> special;
        bool implied_one;
        decode.apply(value, incoming_exponent, incoming_mantissa, special, implied_one);
        bool contributes = special == 0;

        bit<16> exponent_before;
        bit<16> exponent;
        exponent_register.apply(meta.row, meta.first, meta.update, contributes,
                                incoming_exponent, exponent_before, exponent);
        bit<32> mantissa;
        bool overflow;
        mantissa_register.apply(meta.row, meta.first, meta.update, contributes,
                                incoming_exponent, incoming_mantissa, exponent_before,
                                mantissa, overflow);
        bit<8> new_flags = special;
        if (overflow) {
            new_flags = new_flags | ELEMENT_OVERFLOW;
        }
        bit<8> flags;
        element_flags.apply(meta.row, meta.first, meta.update, new_flags, flags);

        if (meta.readout) {
            bit<32> bits;
            normalize.apply(exponent, mantissa, flags, bits);
            to_wire.apply(bits, value);
            summarize.apply(flags, meta.row_flags);
            if (meta.want_raw) {
                raw.apply(exponent, mantissa, raw_mantissa, raw_exponent);
            }
        }
    }
}

control FpisaALane(inout bit<32> value, inout bit<64> raw_mantissa, inout bit<16> raw_exponent,
                   inout metadata_t meta) {
    DecodeFp32() decode;
    FpisaAExponentRegister() exponent_register;
    FpisaAMantissaRegister() mantissa_register;
    ElementFlags() element_flags;
    NormalizeTables() normalize;
    SwapBytes32() to_wire;
    SummarizeFlags() summarize;
    RawRegisters() raw;

    apply {
        bit<16> incoming_exponent;
        bit<32> incoming_mantissa;
        bit<8> special;
        bool implied_one;
        decode.apply(value, incoming_exponent, incoming_mantissa, special, implied_one);
        // zeros and subnormals are flushed: only normal values contribute
        bool contributes = special == 0 && implied_one;

        bit<8> alignment;
        bit<8> distance;
        bit<16> exponent;
        exponent_register.apply(meta.row, meta.first, meta.update, contributes,
                                incoming_exponent, alignment, distance, exponent);
        bit<32> mantissa;
        bool overflow;
        mantissa_register.apply(meta.row, meta.first, meta.update, alignment, distance,
                                incoming_mantissa, mantissa, overflow);
        bit<8> new_flags = special;
        if (overflow) {
            new_flags = new_flags | ELEMENT_OVERFLOW;
        }
        if (alignment == ALIGN_OVERWRITE) {
            new_flags = new_flags | ELEMENT_OVERWRITE;
        }
        bit<8> flags;
        element_flags.apply(meta.row, meta.first, meta.update, new_flags, flags);

        if (meta.readout) {
            bit<32> bits;
            normalize.apply(exponent, mantissa, flags, bits);
            to_wire.apply(bits, value);
            summarize.apply(flags, meta.row_flags);
            if (meta.want_raw) {
                raw.apply(exponent, mantissa, raw_mantissa, raw_exponent);
            }
        }
    }
}

// SwitchML: int32 (big-endian on the wire, the header field order) wrapping
// sum, or signed max for the exponent exchange (mode int-max).
control SwitchmlLane(inout bit<32> value, inout metadata_t meta) {
    register<bit<32>>(POOL_ROWS) value_register;

    apply {
        bit<32> stored = 0;
        if (!meta.first) {
            value_register.read(stored, meta.row);
        }
        if (meta.update) {
            if (meta.first) {
                stored = value;
            } else if (meta.int_max_mode) {
                // signed max on unsigned bits: flipping the sign bits orders them
                if ((value ^ 0x80000000) > (stored ^ 0x80000000)) {
                    stored = value;
                }
            } else {
                stored = stored + value;  // wraps like the switch's ALU
            }
            value_register.write(meta.row, stored);
        }
        if (meta.readout) {
            value = stored;
        }
    }
}

#endif
