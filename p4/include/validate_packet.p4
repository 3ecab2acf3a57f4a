// First stop of every packet: is it a well-formed DATA packet for a mode
// this program aggregates? Sets meta.drop_counter to the reason if not.
#ifndef FPISA_VALIDATE_PACKET_P4
#define FPISA_VALIDATE_PACKET_P4

#include "headers.p4"

// mode_a, mode_b: the wire modes the program aggregates (equal if only one);
// float_modes: whether the payload is fp32 (then fmt must be FMT_FP32).
control ValidatePacket(inout headers_t hdr, inout metadata_t meta)
                      (bit<8> mode_a, bit<8> mode_b, bool float_modes) {
    apply {
        meta.drop_counter = 0;
        if (!hdr.udp.isValid()) {
            meta.drop_counter = C_DROP_NOT_AGGREGATION;
        } else if (!hdr.agg.isValid()) {
            meta.drop_counter = C_DROP_BAD_LENGTH;  // truncated header
        } else if (hdr.agg.version != FPISA_VERSION || hdr.agg.msg_type != MSG_DATA) {
            meta.drop_counter = C_DROP_BAD_HEADER;
        } else if (hdr.agg.mode != mode_a && hdr.agg.mode != mode_b) {
            meta.drop_counter = C_DROP_WRONG_MODE;
        } else if (float_modes && hdr.agg.fmt != FMT_FP32) {
            // fp16/bf16 payloads: only the emulator aggregates them
            meta.drop_counter = C_DROP_WRONG_MODE;
        } else if (!hdr.elements[N_ELEMENTS - 1].isValid() || hdr.udp.length != DATA_UDP_LENGTH) {
            meta.drop_counter = C_DROP_BAD_LENGTH;
        }
    }
}

#endif
