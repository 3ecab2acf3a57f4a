// SwitchML's block exponent: the max over the workers of the header's
// block_exponent (signed 16 bit), returned in every result. Every program
// keeps it (the emulator does, whatever the mode), so results match.
#ifndef FPISA_BLOCK_EXPONENT_P4
#define FPISA_BLOCK_EXPONENT_P4

#include "headers.p4"

control BlockExponentMax(inout headers_t hdr, inout metadata_t meta) {
    register<bit<16>>(POOL_ROWS) block_exponent_register;

    apply {
        bit<16> stored = 0;
        if (!meta.first) {
            block_exponent_register.read(stored, meta.row);
        }
        if (meta.update) {
            // signed max on unsigned bits: flipping the sign bits orders them
            if (meta.first || (hdr.agg.block_exponent ^ 0x8000) > (stored ^ 0x8000)) {
                stored = hdr.agg.block_exponent;
            }
            block_exponent_register.write(meta.row, stored);
        }
        if (meta.readout) {
            hdr.agg.block_exponent = stored;
        }
    }
}

#endif
