// FPISA-A (numerics section 3): what a Tofino-class switch can do. A stored
// register cannot be shifted before the add, and shifts are constant: the
// shift distance selects one constant-shift action in a table
// (generated/shift_tables.p4). So only the incoming value moves:
//   E == 0 (no value yet)  -> write: E = e, A = S
//   e <= E                 -> A += S >> (E - e)            (table-selected shift)
//   0 < e - E <= headroom  -> A += S << (e - E), E stays   (into the headroom)
//   e - E > headroom       -> overwrite: E = e, A = S      (the stored value is lost)
// Adds saturate; subnormals and zeros are flushed (contribute nothing).
//
// Apart from the shift table, straight-line code (no pipeline nodes of its
// own): each register is read and written on every packet that reaches the
// lanes; without an update the value written back is the value read.
#ifndef FPISA_FPISA_A_REGISTERS_P4
#define FPISA_FPISA_A_REGISTERS_P4

#include "headers.p4"
#include "generated/shift_tables.p4"

control FpisaAExponentRegister(in bit<32> row, in bool first, in bool update, in bool contributes,
                               in bit<16> incoming, out bit<8> alignment, out bit<8> distance,
                               out bit<16> stored_after) {
    register<bit<16>>(POOL_ROWS) exponent_register;

    apply {
        bit<16> stored;  // 0: no value yet
        exponent_register.read(stored, row);
        stored = stored & ~MASK(16, first);
        alignment = SEL(8, !(update && contributes), ALIGN_NONE,
                    SEL(8, stored == 0, ALIGN_WRITE,
                    SEL(8, incoming > stored && incoming - stored > (bit<16>)HEADROOM_BITS, ALIGN_OVERWRITE,
                    SEL(8, incoming <= stored, ALIGN_RIGHT, ALIGN_LEFT))));
        // right: the table's default action covers >= 31 (255 stands for more)
        distance = SEL(8, alignment == ALIGN_RIGHT,
                       SEL(8, stored - incoming > 255, 255, (bit<8>)(stored - incoming)),
                       MASK(8, alignment == ALIGN_LEFT) & (bit<8>)(incoming - stored));
        stored_after = SEL(16, alignment == ALIGN_WRITE || alignment == ALIGN_OVERWRITE, incoming, stored);
        exponent_register.write(row, stored_after);
    }
}

control FpisaAMantissaRegister(in bit<32> row, in bool first, in bit<8> alignment, in bit<8> distance,
                               in bit<32> incoming_mantissa, out bit<32> stored_after,
                               out bool overflow) {
    register<bit<32>>(POOL_ROWS) mantissa_register;
    AlignIncoming() align;

    apply {
        // the incoming value, shifted by the action the table picks for
        // (alignment, distance); only right and left alignments use it
        bit<32> addend = incoming_mantissa;
        align.apply(addend, alignment, distance);
        bit<32> stored;
        mantissa_register.read(stored, row);
        stored = stored & ~MASK(32, first);
        bool adds = alignment == ALIGN_RIGHT || alignment == ALIGN_LEFT;
        bit<32> sum = stored + addend;
        overflow = adds && stored[31:31] == addend[31:31] && sum[31:31] != stored[31:31];
        // an overflowing add saturates to the largest magnitude of the sign
        // (0x7FFFFFFF + the sign bit)
        stored_after = SEL(32, alignment == ALIGN_WRITE || alignment == ALIGN_OVERWRITE, incoming_mantissa,
                       SEL(32, !adds, stored,
                       SEL(32, !overflow, sum, 32w0x7FFFFFFF + (stored >> 31))));
        mantissa_register.write(row, stored_after);
    }
}

#endif
