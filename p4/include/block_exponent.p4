// SwitchML's block exponent: the max over the workers of the header's
// block_exponent (signed 16 bit), returned in every result. Every program
// keeps it (the emulator does, whatever the mode), so results match.
#ifndef FPISA_BLOCK_EXPONENT_P4
#define FPISA_BLOCK_EXPONENT_P4

#include "headers.p4"

control BlockExponentMax(inout headers_t hdr, inout metadata_t meta) {
    register<bit<16>>(POOL_ROWS) block_exponent_register;

    apply {
        // straight-line: read and written back on every packet that gets
        // here, the value read unless the packet updates the row
        bit<16> stored;
        block_exponent_register.read(stored, meta.row);
        // signed max on unsigned bits: flipping the sign bits orders them
        stored = SEL(16, meta.update && (meta.first
                         || (hdr.agg.block_exponent ^ 0x8000) > (stored ^ 0x8000)),
                     hdr.agg.block_exponent, stored);
        block_exponent_register.write(meta.row, stored);
        hdr.agg.block_exponent = SEL(16, meta.readout, stored, hdr.agg.block_exponent);
    }
}

#endif
