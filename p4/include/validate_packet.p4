// First stop of every packet: is it a well-formed DATA packet for a mode
// this program aggregates? Sets meta.drop_counter to the reason if not.
#ifndef FPISA_VALIDATE_PACKET_P4
#define FPISA_VALIDATE_PACKET_P4

#include "headers.p4"

// mode_a, mode_b: the wire modes the program aggregates (equal if only one);
// float_modes: whether the payload is floats (then fmt must be the build's
// format, FORMAT_CODE: generated/format.p4).
control ValidatePacket(inout headers_t hdr, inout metadata_t meta)
                      (bit<8> mode_a, bit<8> mode_b, bool float_modes) {
    apply {
        // one assignment (no BMv2 pipeline nodes): the first reason that applies
        // (SEL, headers.p4; fields of headers that are not valid may be read)
        meta.drop_counter = SEL(32, !hdr.udp.isValid(), C_DROP_NOT_AGGREGATION,
            SEL(32, !hdr.agg.isValid(), C_DROP_BAD_LENGTH,  // truncated header
            SEL(32, hdr.agg.version != FPISA_VERSION || hdr.agg.msg_type != MSG_DATA, C_DROP_BAD_HEADER,
            SEL(32, hdr.agg.mode != mode_a && hdr.agg.mode != mode_b, C_DROP_WRONG_MODE,
            // another format: another build aggregates it
            SEL(32, float_modes && hdr.agg.fmt != FORMAT_CODE, C_DROP_WRONG_MODE,
            MASK(32, !hdr.elements.isValid() || hdr.udp.length != DATA_UDP_LENGTH)
                & C_DROP_BAD_LENGTH)))));
    }
}

#endif
