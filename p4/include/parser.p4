// Parser and deparser: Ethernet / IPv4 / UDP to FPISA_UDP_PORT / agg_t /
// N_ELEMENTS elements. Anything else is parsed as far as it goes and
// dropped by ValidatePacket (counted).
#ifndef FPISA_PARSER_P4
#define FPISA_PARSER_P4

#include "headers.p4"

parser AggregationParser(packet_in packet, out headers_t hdr, inout metadata_t meta,
                         inout standard_metadata_t standard_metadata) {
    state start {
        packet.extract(hdr.ethernet);
        transition select(hdr.ethernet.ether_type) {
            0x0800: parse_ipv4;
            default: accept;
        }
    }
    state parse_ipv4 {
        packet.extract(hdr.ipv4);
        transition select(hdr.ipv4.ihl, hdr.ipv4.protocol) {
            (5, 17): parse_udp;
            default: accept;
        }
    }
    state parse_udp {
        packet.extract(hdr.udp);
        transition select(hdr.udp.dst_port) {
            FPISA_UDP_PORT: parse_agg;
            default: accept;
        }
    }
    state parse_agg {
        packet.extract(hdr.agg);
        transition select(hdr.agg.num_elements) {
            N_ELEMENTS: parse_elements;
            default: accept;
        }
    }
    // all elements at once: one header of N_ELEMENTS fields (not a stack of
    // one-field headers: BMv2 pays per header, docs/p4.md "Speed on BMv2")
    state parse_elements {
        packet.extract(hdr.elements);
        transition accept;
    }
}

control AggregationDeparser(packet_out packet, in headers_t hdr) {
    apply {
        packet.emit(hdr.ethernet);
        packet.emit(hdr.ipv4);
        packet.emit(hdr.udp);
        packet.emit(hdr.agg);
        packet.emit(hdr.elements);
        packet.emit(hdr.raw);
    }
}

control NoChecksumVerification(inout headers_t hdr, inout metadata_t meta) {
    apply { }
}

// Results change the IPv4 total length and addresses: recompute the header
// checksum. The UDP checksum of results is 0 (allowed for IPv4).
control Ipv4ChecksumUpdate(inout headers_t hdr, inout metadata_t meta) {
    apply {
        update_checksum(
            hdr.ipv4.isValid(),
            { hdr.ipv4.version, hdr.ipv4.ihl, hdr.ipv4.diffserv, hdr.ipv4.total_len,
              hdr.ipv4.identification, hdr.ipv4.flags, hdr.ipv4.frag_offset, hdr.ipv4.ttl,
              hdr.ipv4.protocol, hdr.ipv4.src_addr, hdr.ipv4.dst_addr },
            hdr.ipv4.hdr_checksum,
            HashAlgorithm.csum16);
    }
}

#endif
