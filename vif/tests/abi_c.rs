//! The netif ABI checked against Xen's own headers (DESIGN.md "Real peers in the loop").
//!
//! Writes a C program that includes Debian libxen-dev's `<xen/io/netif.h>` and
//! `<xen/io/ring.h>`, compiles it with `cc`, runs it, and compares every size, field
//! offset, ring entry count (`__CONST_RING_SIZE` and `__RING_SIZE` on a 4096-byte page)
//! and constant it prints with ours. A missing header or compiler fails the test: it
//! never skips.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;

use vif::netif::*;

const HEADERS: &[&str] = &["/usr/include/xen/io/netif.h", "/usr/include/xen/io/ring.h"];

/// (name, C expression) pairs; each is printed as `name value`.
const C_FACTS: &[(&str, &str)] = &[
    // shared ring header
    (
        "sring.req_prod",
        "offsetof(struct netif_tx_sring, req_prod)",
    ),
    (
        "sring.req_event",
        "offsetof(struct netif_tx_sring, req_event)",
    ),
    (
        "sring.rsp_prod",
        "offsetof(struct netif_tx_sring, rsp_prod)",
    ),
    (
        "sring.rsp_event",
        "offsetof(struct netif_tx_sring, rsp_event)",
    ),
    ("sring.pvt", "offsetof(struct netif_tx_sring, pvt)"),
    (
        "sizeof.sring.pvt",
        "sizeof(((struct netif_tx_sring *)0)->pvt)",
    ),
    ("sring.__pad", "offsetof(struct netif_tx_sring, __pad)"),
    (
        "sizeof.sring.__pad",
        "sizeof(((struct netif_tx_sring *)0)->__pad)",
    ),
    ("sring.ring.tx", "offsetof(struct netif_tx_sring, ring)"),
    ("sring.ring.rx", "offsetof(struct netif_rx_sring, ring)"),
    (
        "sring.ring.ctrl",
        "offsetof(struct xen_netif_ctrl_sring, ring)",
    ),
    // tx
    ("sizeof.netif_tx_request", "sizeof(struct netif_tx_request)"),
    (
        "netif_tx_request.gref",
        "offsetof(struct netif_tx_request, gref)",
    ),
    (
        "netif_tx_request.offset",
        "offsetof(struct netif_tx_request, offset)",
    ),
    (
        "netif_tx_request.flags",
        "offsetof(struct netif_tx_request, flags)",
    ),
    (
        "netif_tx_request.id",
        "offsetof(struct netif_tx_request, id)",
    ),
    (
        "netif_tx_request.size",
        "offsetof(struct netif_tx_request, size)",
    ),
    (
        "sizeof.netif_tx_response",
        "sizeof(struct netif_tx_response)",
    ),
    (
        "netif_tx_response.id",
        "offsetof(struct netif_tx_response, id)",
    ),
    (
        "netif_tx_response.status",
        "offsetof(struct netif_tx_response, status)",
    ),
    (
        "sizeof.netif_tx_sring_entry",
        "sizeof(union netif_tx_sring_entry)",
    ),
    // rx
    ("sizeof.netif_rx_request", "sizeof(struct netif_rx_request)"),
    (
        "netif_rx_request.id",
        "offsetof(struct netif_rx_request, id)",
    ),
    (
        "netif_rx_request.pad",
        "offsetof(struct netif_rx_request, pad)",
    ),
    (
        "netif_rx_request.gref",
        "offsetof(struct netif_rx_request, gref)",
    ),
    (
        "sizeof.netif_rx_response",
        "sizeof(struct netif_rx_response)",
    ),
    (
        "netif_rx_response.id",
        "offsetof(struct netif_rx_response, id)",
    ),
    (
        "netif_rx_response.offset",
        "offsetof(struct netif_rx_response, offset)",
    ),
    (
        "netif_rx_response.flags",
        "offsetof(struct netif_rx_response, flags)",
    ),
    (
        "netif_rx_response.status",
        "offsetof(struct netif_rx_response, status)",
    ),
    (
        "sizeof.netif_rx_sring_entry",
        "sizeof(union netif_rx_sring_entry)",
    ),
    // extra info
    ("sizeof.netif_extra_info", "sizeof(struct netif_extra_info)"),
    (
        "netif_extra_info.type",
        "offsetof(struct netif_extra_info, type)",
    ),
    (
        "netif_extra_info.flags",
        "offsetof(struct netif_extra_info, flags)",
    ),
    ("netif_extra_info.u", "offsetof(struct netif_extra_info, u)"),
    (
        "sizeof.netif_extra_info.u",
        "sizeof(((struct netif_extra_info *)0)->u)",
    ),
    (
        "netif_extra_info.u.gso.size",
        "offsetof(struct netif_extra_info, u.gso.size)",
    ),
    (
        "netif_extra_info.u.gso.type",
        "offsetof(struct netif_extra_info, u.gso.type)",
    ),
    (
        "netif_extra_info.u.gso.pad",
        "offsetof(struct netif_extra_info, u.gso.pad)",
    ),
    (
        "netif_extra_info.u.gso.features",
        "offsetof(struct netif_extra_info, u.gso.features)",
    ),
    (
        "netif_extra_info.u.mcast.addr",
        "offsetof(struct netif_extra_info, u.mcast.addr)",
    ),
    (
        "netif_extra_info.u.hash.type",
        "offsetof(struct netif_extra_info, u.hash.type)",
    ),
    (
        "netif_extra_info.u.hash.algorithm",
        "offsetof(struct netif_extra_info, u.hash.algorithm)",
    ),
    (
        "netif_extra_info.u.hash.value",
        "offsetof(struct netif_extra_info, u.hash.value)",
    ),
    // control ring
    (
        "sizeof.xen_netif_ctrl_request",
        "sizeof(struct xen_netif_ctrl_request)",
    ),
    (
        "xen_netif_ctrl_request.id",
        "offsetof(struct xen_netif_ctrl_request, id)",
    ),
    (
        "xen_netif_ctrl_request.type",
        "offsetof(struct xen_netif_ctrl_request, type)",
    ),
    (
        "xen_netif_ctrl_request.data",
        "offsetof(struct xen_netif_ctrl_request, data)",
    ),
    (
        "sizeof.xen_netif_ctrl_response",
        "sizeof(struct xen_netif_ctrl_response)",
    ),
    (
        "xen_netif_ctrl_response.id",
        "offsetof(struct xen_netif_ctrl_response, id)",
    ),
    (
        "xen_netif_ctrl_response.type",
        "offsetof(struct xen_netif_ctrl_response, type)",
    ),
    (
        "xen_netif_ctrl_response.status",
        "offsetof(struct xen_netif_ctrl_response, status)",
    ),
    (
        "xen_netif_ctrl_response.data",
        "offsetof(struct xen_netif_ctrl_response, data)",
    ),
    (
        "sizeof.xen_netif_ctrl_sring_entry",
        "sizeof(union xen_netif_ctrl_sring_entry)",
    ),
    ("sizeof.xen_netif_gref", "sizeof(struct xen_netif_gref)"),
    ("xen_netif_gref.ref", "offsetof(struct xen_netif_gref, ref)"),
    (
        "xen_netif_gref.flags",
        "offsetof(struct xen_netif_gref, flags)",
    ),
    (
        "xen_netif_gref.status",
        "offsetof(struct xen_netif_gref, status)",
    ),
    // ring entry counts on one 4096-byte page
    ("const_ring_size.tx", "__CONST_RING_SIZE(netif_tx, 4096)"),
    ("const_ring_size.rx", "__CONST_RING_SIZE(netif_rx, 4096)"),
    (
        "const_ring_size.ctrl",
        "__CONST_RING_SIZE(xen_netif_ctrl, 4096)",
    ),
    (
        "ring_size.tx",
        "__RING_SIZE((struct netif_tx_sring *)page, 4096)",
    ),
    (
        "ring_size.rx",
        "__RING_SIZE((struct netif_rx_sring *)page, 4096)",
    ),
    (
        "ring_size.ctrl",
        "__RING_SIZE((struct xen_netif_ctrl_sring *)page, 4096)",
    ),
    // constants
    ("NETTXF_csum_blank", "NETTXF_csum_blank"),
    ("NETTXF_data_validated", "NETTXF_data_validated"),
    ("NETTXF_more_data", "NETTXF_more_data"),
    ("NETTXF_extra_info", "NETTXF_extra_info"),
    ("NETRXF_data_validated", "NETRXF_data_validated"),
    ("NETRXF_csum_blank", "NETRXF_csum_blank"),
    ("NETRXF_more_data", "NETRXF_more_data"),
    ("NETRXF_extra_info", "NETRXF_extra_info"),
    ("NETRXF_gso_prefix", "NETRXF_gso_prefix"),
    ("XEN_NETIF_MAX_TX_SIZE", "XEN_NETIF_MAX_TX_SIZE"),
    ("XEN_NETIF_NR_SLOTS_MIN", "XEN_NETIF_NR_SLOTS_MIN"),
    ("XEN_NETIF_EXTRA_TYPE_NONE", "XEN_NETIF_EXTRA_TYPE_NONE"),
    ("XEN_NETIF_EXTRA_TYPE_GSO", "XEN_NETIF_EXTRA_TYPE_GSO"),
    (
        "XEN_NETIF_EXTRA_TYPE_MCAST_ADD",
        "XEN_NETIF_EXTRA_TYPE_MCAST_ADD",
    ),
    (
        "XEN_NETIF_EXTRA_TYPE_MCAST_DEL",
        "XEN_NETIF_EXTRA_TYPE_MCAST_DEL",
    ),
    ("XEN_NETIF_EXTRA_TYPE_HASH", "XEN_NETIF_EXTRA_TYPE_HASH"),
    ("XEN_NETIF_EXTRA_TYPE_MAX", "XEN_NETIF_EXTRA_TYPE_MAX"),
    ("XEN_NETIF_EXTRA_FLAG_MORE", "XEN_NETIF_EXTRA_FLAG_MORE"),
    ("XEN_NETIF_GSO_TYPE_NONE", "XEN_NETIF_GSO_TYPE_NONE"),
    ("XEN_NETIF_GSO_TYPE_TCPV4", "XEN_NETIF_GSO_TYPE_TCPV4"),
    ("XEN_NETIF_GSO_TYPE_TCPV6", "XEN_NETIF_GSO_TYPE_TCPV6"),
    ("NETIF_RSP_DROPPED", "NETIF_RSP_DROPPED"),
    ("NETIF_RSP_ERROR", "NETIF_RSP_ERROR"),
    ("NETIF_RSP_OKAY", "NETIF_RSP_OKAY"),
    ("NETIF_RSP_NULL", "NETIF_RSP_NULL"),
    ("XEN_NETIF_CTRL_TYPE_INVALID", "XEN_NETIF_CTRL_TYPE_INVALID"),
    (
        "XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS",
        "XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS",
    ),
    (
        "XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS",
        "XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS",
    ),
    (
        "XEN_NETIF_CTRL_TYPE_SET_HASH_KEY",
        "XEN_NETIF_CTRL_TYPE_SET_HASH_KEY",
    ),
    (
        "XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE",
        "XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE",
    ),
    (
        "XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE",
        "XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE",
    ),
    (
        "XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING",
        "XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING",
    ),
    (
        "XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM",
        "XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM",
    ),
    (
        "XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE",
        "XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE",
    ),
    (
        "XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING",
        "XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING",
    ),
    (
        "XEN_NETIF_CTRL_TYPE_DEL_GREF_MAPPING",
        "XEN_NETIF_CTRL_TYPE_DEL_GREF_MAPPING",
    ),
    (
        "XEN_NETIF_CTRL_STATUS_SUCCESS",
        "XEN_NETIF_CTRL_STATUS_SUCCESS",
    ),
    (
        "XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED",
        "XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED",
    ),
    (
        "XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER",
        "XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER",
    ),
    (
        "XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW",
        "XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW",
    ),
    (
        "XEN_NETIF_CTRL_HASH_ALGORITHM_NONE",
        "XEN_NETIF_CTRL_HASH_ALGORITHM_NONE",
    ),
    (
        "XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ",
        "XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ",
    ),
    (
        "XEN_NETIF_CTRL_HASH_TYPE_IPV4",
        "XEN_NETIF_CTRL_HASH_TYPE_IPV4",
    ),
    (
        "XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP",
        "XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP",
    ),
    (
        "XEN_NETIF_CTRL_HASH_TYPE_IPV6",
        "XEN_NETIF_CTRL_HASH_TYPE_IPV6",
    ),
    (
        "XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP",
        "XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP",
    ),
    (
        "XEN_NETIF_CTRLF_GREF_readonly",
        "XEN_NETIF_CTRLF_GREF_readonly",
    ),
];

/// Our value for every fact the C program prints.
fn rust_facts() -> BTreeMap<&'static str, i64> {
    let e = offset_of!(ExtraInfo, payload);
    let v = |x: usize| x as i64;
    [
        ("sring.req_prod", v(offset_of!(SharedRingHeader, req_prod))),
        (
            "sring.req_event",
            v(offset_of!(SharedRingHeader, req_event)),
        ),
        ("sring.rsp_prod", v(offset_of!(SharedRingHeader, rsp_prod))),
        (
            "sring.rsp_event",
            v(offset_of!(SharedRingHeader, rsp_event)),
        ),
        ("sring.pvt", v(offset_of!(SharedRingHeader, pvt))),
        ("sizeof.sring.pvt", v(size_of::<[u8; 4]>())),
        ("sring.__pad", v(offset_of!(SharedRingHeader, pad))),
        ("sizeof.sring.__pad", v(size_of::<[u8; 44]>())),
        ("sring.ring.tx", v(RING_HEADER_SIZE)),
        ("sring.ring.rx", v(RING_HEADER_SIZE)),
        ("sring.ring.ctrl", v(RING_HEADER_SIZE)),
        ("sizeof.netif_tx_request", v(size_of::<TxRequest>())),
        ("netif_tx_request.gref", v(offset_of!(TxRequest, gref))),
        ("netif_tx_request.offset", v(offset_of!(TxRequest, offset))),
        ("netif_tx_request.flags", v(offset_of!(TxRequest, flags))),
        ("netif_tx_request.id", v(offset_of!(TxRequest, id))),
        ("netif_tx_request.size", v(offset_of!(TxRequest, size))),
        ("sizeof.netif_tx_response", v(size_of::<TxResponse>())),
        ("netif_tx_response.id", v(offset_of!(TxResponse, id))),
        (
            "netif_tx_response.status",
            v(offset_of!(TxResponse, status)),
        ),
        ("sizeof.netif_tx_sring_entry", v(NetifTx::SLOT_SIZE)),
        ("sizeof.netif_rx_request", v(size_of::<RxRequest>())),
        ("netif_rx_request.id", v(offset_of!(RxRequest, id))),
        ("netif_rx_request.pad", v(offset_of!(RxRequest, pad))),
        ("netif_rx_request.gref", v(offset_of!(RxRequest, gref))),
        ("sizeof.netif_rx_response", v(size_of::<RxResponse>())),
        ("netif_rx_response.id", v(offset_of!(RxResponse, id))),
        (
            "netif_rx_response.offset",
            v(offset_of!(RxResponse, offset)),
        ),
        ("netif_rx_response.flags", v(offset_of!(RxResponse, flags))),
        (
            "netif_rx_response.status",
            v(offset_of!(RxResponse, status)),
        ),
        ("sizeof.netif_rx_sring_entry", v(NetifRx::SLOT_SIZE)),
        ("sizeof.netif_extra_info", v(size_of::<ExtraInfo>())),
        (
            "netif_extra_info.type",
            v(offset_of!(ExtraInfo, extra_type)),
        ),
        ("netif_extra_info.flags", v(offset_of!(ExtraInfo, flags))),
        ("netif_extra_info.u", v(e)),
        ("sizeof.netif_extra_info.u", v(size_of::<[u8; 6]>())),
        (
            "netif_extra_info.u.gso.size",
            v(e + offset_of!(ExtraGsoPayload, size)),
        ),
        (
            "netif_extra_info.u.gso.type",
            v(e + offset_of!(ExtraGsoPayload, gso_type)),
        ),
        (
            "netif_extra_info.u.gso.pad",
            v(e + offset_of!(ExtraGsoPayload, pad)),
        ),
        (
            "netif_extra_info.u.gso.features",
            v(e + offset_of!(ExtraGsoPayload, features)),
        ),
        ("netif_extra_info.u.mcast.addr", v(e)),
        (
            "netif_extra_info.u.hash.type",
            v(e + offset_of!(ExtraHashPayload, hash_type)),
        ),
        (
            "netif_extra_info.u.hash.algorithm",
            v(e + offset_of!(ExtraHashPayload, algorithm)),
        ),
        (
            "netif_extra_info.u.hash.value",
            v(e + offset_of!(ExtraHashPayload, value)),
        ),
        ("sizeof.xen_netif_ctrl_request", v(size_of::<CtrlRequest>())),
        ("xen_netif_ctrl_request.id", v(offset_of!(CtrlRequest, id))),
        (
            "xen_netif_ctrl_request.type",
            v(offset_of!(CtrlRequest, ctrl_type)),
        ),
        (
            "xen_netif_ctrl_request.data",
            v(offset_of!(CtrlRequest, data)),
        ),
        (
            "sizeof.xen_netif_ctrl_response",
            v(size_of::<CtrlResponse>()),
        ),
        (
            "xen_netif_ctrl_response.id",
            v(offset_of!(CtrlResponse, id)),
        ),
        (
            "xen_netif_ctrl_response.type",
            v(offset_of!(CtrlResponse, ctrl_type)),
        ),
        (
            "xen_netif_ctrl_response.status",
            v(offset_of!(CtrlResponse, status)),
        ),
        (
            "xen_netif_ctrl_response.data",
            v(offset_of!(CtrlResponse, data)),
        ),
        ("sizeof.xen_netif_ctrl_sring_entry", v(NetifCtrl::SLOT_SIZE)),
        ("sizeof.xen_netif_gref", v(size_of::<NetifGref>())),
        ("xen_netif_gref.ref", v(offset_of!(NetifGref, gref))),
        ("xen_netif_gref.flags", v(offset_of!(NetifGref, flags))),
        ("xen_netif_gref.status", v(offset_of!(NetifGref, status))),
        ("const_ring_size.tx", i64::from(NET_TX_RING_SIZE)),
        ("const_ring_size.rx", i64::from(NET_RX_RING_SIZE)),
        ("const_ring_size.ctrl", i64::from(NET_CTRL_RING_SIZE)),
        ("ring_size.tx", i64::from(NetifTx::NR_ENTS)),
        ("ring_size.rx", i64::from(NetifRx::NR_ENTS)),
        ("ring_size.ctrl", i64::from(NetifCtrl::NR_ENTS)),
        ("NETTXF_csum_blank", i64::from(NETTXF_CSUM_BLANK)),
        ("NETTXF_data_validated", i64::from(NETTXF_DATA_VALIDATED)),
        ("NETTXF_more_data", i64::from(NETTXF_MORE_DATA)),
        ("NETTXF_extra_info", i64::from(NETTXF_EXTRA_INFO)),
        ("NETRXF_data_validated", i64::from(NETRXF_DATA_VALIDATED)),
        ("NETRXF_csum_blank", i64::from(NETRXF_CSUM_BLANK)),
        ("NETRXF_more_data", i64::from(NETRXF_MORE_DATA)),
        ("NETRXF_extra_info", i64::from(NETRXF_EXTRA_INFO)),
        ("NETRXF_gso_prefix", i64::from(NETRXF_GSO_PREFIX)),
        ("XEN_NETIF_MAX_TX_SIZE", v(XEN_NETIF_MAX_TX_SIZE)),
        ("XEN_NETIF_NR_SLOTS_MIN", v(XEN_NETIF_NR_SLOTS_MIN)),
        (
            "XEN_NETIF_EXTRA_TYPE_NONE",
            i64::from(XEN_NETIF_EXTRA_TYPE_NONE),
        ),
        (
            "XEN_NETIF_EXTRA_TYPE_GSO",
            i64::from(XEN_NETIF_EXTRA_TYPE_GSO),
        ),
        (
            "XEN_NETIF_EXTRA_TYPE_MCAST_ADD",
            i64::from(XEN_NETIF_EXTRA_TYPE_MCAST_ADD),
        ),
        (
            "XEN_NETIF_EXTRA_TYPE_MCAST_DEL",
            i64::from(XEN_NETIF_EXTRA_TYPE_MCAST_DEL),
        ),
        (
            "XEN_NETIF_EXTRA_TYPE_HASH",
            i64::from(XEN_NETIF_EXTRA_TYPE_HASH),
        ),
        (
            "XEN_NETIF_EXTRA_TYPE_MAX",
            i64::from(XEN_NETIF_EXTRA_TYPE_MAX),
        ),
        (
            "XEN_NETIF_EXTRA_FLAG_MORE",
            i64::from(XEN_NETIF_EXTRA_FLAG_MORE),
        ),
        (
            "XEN_NETIF_GSO_TYPE_NONE",
            i64::from(XEN_NETIF_GSO_TYPE_NONE),
        ),
        (
            "XEN_NETIF_GSO_TYPE_TCPV4",
            i64::from(XEN_NETIF_GSO_TYPE_TCPV4),
        ),
        (
            "XEN_NETIF_GSO_TYPE_TCPV6",
            i64::from(XEN_NETIF_GSO_TYPE_TCPV6),
        ),
        ("NETIF_RSP_DROPPED", i64::from(NETIF_RSP_DROPPED)),
        ("NETIF_RSP_ERROR", i64::from(NETIF_RSP_ERROR)),
        ("NETIF_RSP_OKAY", i64::from(NETIF_RSP_OKAY)),
        ("NETIF_RSP_NULL", i64::from(NETIF_RSP_NULL)),
        (
            "XEN_NETIF_CTRL_TYPE_INVALID",
            i64::from(XEN_NETIF_CTRL_TYPE_INVALID),
        ),
        (
            "XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS",
            i64::from(XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS),
        ),
        (
            "XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS",
            i64::from(XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS),
        ),
        (
            "XEN_NETIF_CTRL_TYPE_SET_HASH_KEY",
            i64::from(XEN_NETIF_CTRL_TYPE_SET_HASH_KEY),
        ),
        (
            "XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE",
            i64::from(XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE),
        ),
        (
            "XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE",
            i64::from(XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE),
        ),
        (
            "XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING",
            i64::from(XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING),
        ),
        (
            "XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM",
            i64::from(XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM),
        ),
        (
            "XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE",
            i64::from(XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE),
        ),
        (
            "XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING",
            i64::from(XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING),
        ),
        (
            "XEN_NETIF_CTRL_TYPE_DEL_GREF_MAPPING",
            i64::from(XEN_NETIF_CTRL_TYPE_DEL_GREF_MAPPING),
        ),
        (
            "XEN_NETIF_CTRL_STATUS_SUCCESS",
            i64::from(XEN_NETIF_CTRL_STATUS_SUCCESS),
        ),
        (
            "XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED",
            i64::from(XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED),
        ),
        (
            "XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER",
            i64::from(XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER),
        ),
        (
            "XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW",
            i64::from(XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW),
        ),
        (
            "XEN_NETIF_CTRL_HASH_ALGORITHM_NONE",
            i64::from(XEN_NETIF_CTRL_HASH_ALGORITHM_NONE),
        ),
        (
            "XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ",
            i64::from(XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ),
        ),
        (
            "XEN_NETIF_CTRL_HASH_TYPE_IPV4",
            i64::from(XEN_NETIF_CTRL_HASH_TYPE_IPV4),
        ),
        (
            "XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP",
            i64::from(XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP),
        ),
        (
            "XEN_NETIF_CTRL_HASH_TYPE_IPV6",
            i64::from(XEN_NETIF_CTRL_HASH_TYPE_IPV6),
        ),
        (
            "XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP",
            i64::from(XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP),
        ),
        (
            "XEN_NETIF_CTRLF_GREF_readonly",
            i64::from(XEN_NETIF_CTRLF_GREF_READONLY),
        ),
    ]
    .into_iter()
    .collect()
}

fn c_program() -> String {
    let mut src = String::from(
        "#include <stdint.h>\n#include <stddef.h>\n#include <stdio.h>\n\
         #include <xen/io/ring.h>\n#include <xen/io/netif.h>\n\n\
         static unsigned char page[4096] __attribute__((aligned(4096)));\n\n\
         int main(void) {\n",
    );
    for (name, expr) in C_FACTS {
        src.push_str(&format!(
            "    printf(\"{name} %lld\\n\", (long long)({expr}));\n"
        ));
    }
    src.push_str("    return 0;\n}\n");
    src
}

#[test]
fn netif_abi_matches_xen_headers() {
    for h in HEADERS {
        assert!(
            Path::new(h).exists(),
            "{h} is missing: install Debian's libxen-dev (this test never skips)"
        );
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("abi_c");
    std::fs::create_dir_all(&dir).expect("create temp dir");
    let src = dir.join("netif_abi.c");
    let exe = dir.join("netif_abi");
    std::fs::write(&src, c_program()).expect("write C source");
    let cc = Command::new("cc")
        .args(["-std=gnu11", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("running `cc` failed: a C compiler is required (this test never skips)");
    assert!(
        cc.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let run = Command::new(&exe).output().expect("run the C program");
    assert!(run.status.success());
    let stdout = String::from_utf8(run.stdout).expect("utf-8 output");

    let c: BTreeMap<String, i64> = stdout
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').expect("`name value` lines");
            (k.to_string(), v.parse().expect("integer value"))
        })
        .collect();
    let ours = rust_facts();
    assert_eq!(c.len(), C_FACTS.len(), "one line per fact");
    let mut mismatches = Vec::new();
    for (name, &theirs) in &c {
        match ours.get(name.as_str()) {
            Some(&mine) if mine == theirs => {}
            Some(&mine) => mismatches.push(format!("{name}: Xen {theirs}, ours {mine}")),
            None => mismatches.push(format!("{name}: Xen {theirs}, ours missing")),
        }
    }
    for name in ours.keys() {
        if !c.contains_key(*name) {
            mismatches.push(format!("{name}: not checked against C"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "ABI mismatches:\n{}",
        mismatches.join("\n")
    );
    // Sanity: the numbers of §9 themselves.
    assert_eq!(c["const_ring_size.tx"], 256);
    assert_eq!(c["const_ring_size.rx"], 256);
    assert_eq!(c["const_ring_size.ctrl"], 128);
    assert_eq!(c["sring.ring.tx"], 64);
}
