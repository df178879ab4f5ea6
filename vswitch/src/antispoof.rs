//! Ingress filtering of frames from guest vifs: the fail-closed version of Xen's
//! `vif-common.sh handle_iptable` plus libvirt's `clean-traffic` family of filters
//! (robustness.md §3 b5, b6, b12).
//!
//! Always, for every vif:
//! * the Ethernet source must be the vif's MAC (`no-mac-spoofing`);
//! * ARP must be well-formed Ethernet/IPv4 with the vif's MAC as sender hardware address;
//! * no DHCP/DHCPv6 server messages (UDP source port 67 / 547);
//! * no IPv6 Router Advertisements (RA-Guard, RFC 6105), and no IPv6 first fragment whose
//!   header chain stops before the upper-layer header (RFC 7113 evasion);
//! * no ARP/IPv4/IPv6 header (or first-fragment L4 header) too broken to check.
//!
//! When the vif has allowed addresses (`ip=` given), additionally:
//! * IPv4 and ARP only if IPv4 addresses are allowed; IPv4 source in the set, except DHCP
//!   client traffic (UDP 68→67) from 0.0.0.0; ARP sender IP in the set or 0.0.0.0 (RFC 5227
//!   probe);
//! * IPv6 only if IPv6 addresses are allowed; source in the set, or link-local (fe80::/10,
//!   the Ethernet source already pinned to the vif MAC), or `::` for ICMPv6 (DAD probes and
//!   their MLD reports); a Neighbor Advertisement's target must be allowed or link-local;
//! * every other EtherType is refused.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::counters::DropReason;
use crate::port::VifConfig;
use crate::wire::icmpv6::kind as icmp6;
use crate::wire::udp::{DHCPV6_SERVER_PORT, DHCP_SERVER_PORT};
use crate::wire::{FrameInfo, Icmpv6Packet, L3Info, L4Info};

fn ipv4_allowed(vif: &VifConfig, ip: Ipv4Addr) -> bool {
    vif.allowed_ipv4.iter().any(|n| n.contains(ip))
}

fn ipv6_allowed(vif: &VifConfig, ip: Ipv6Addr) -> bool {
    is_link_local(ip) || vif.allowed_ipv6.iter().any(|n| n.contains(ip))
}

fn is_link_local(ip: Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// Decides whether a frame from `vif` may enter the switch; `frame` is the frame `info`
/// was parsed from (read only for an NA's target address).
pub fn check_vif_ingress(
    vif: &VifConfig,
    frame: &[u8],
    info: &FrameInfo,
) -> Result<(), DropReason> {
    if info.src != vif.mac {
        return Err(DropReason::SpoofedSourceMac);
    }
    let filter = vif.filters_ip();
    match &info.l3 {
        L3Info::Malformed => Err(DropReason::MalformedHeader),
        L3Info::Arp(arp) => {
            if arp.sender_mac != vif.mac {
                return Err(DropReason::SpoofedArp);
            }
            if filter {
                if vif.allowed_ipv4.is_empty() {
                    return Err(DropReason::DisallowedEthertype);
                }
                if !arp.sender_ip.is_unspecified() && !ipv4_allowed(vif, arp.sender_ip) {
                    return Err(DropReason::SpoofedArp);
                }
            }
            Ok(())
        }
        L3Info::Ipv4(ip) => {
            match info.l4 {
                L4Info::Truncated => return Err(DropReason::MalformedHeader),
                L4Info::Udp { src_port, .. } if src_port == DHCP_SERVER_PORT => {
                    return Err(DropReason::RogueDhcpServer)
                }
                _ => {}
            }
            if filter {
                if vif.allowed_ipv4.is_empty() {
                    return Err(DropReason::DisallowedEthertype);
                }
                let dhcp_client = ip.src.is_unspecified() && info.is_dhcp_client();
                if !dhcp_client && !ipv4_allowed(vif, ip.src) {
                    return Err(DropReason::SpoofedSourceIp);
                }
            }
            Ok(())
        }
        L3Info::Ipv6(ip) => {
            match info.l4 {
                L4Info::Truncated if !ip.chain_complete => {
                    return Err(DropReason::Ipv6IncompleteHeaderChain)
                }
                L4Info::Truncated => return Err(DropReason::MalformedHeader),
                L4Info::Icmpv6 { msg_type, .. } if msg_type == icmp6::ROUTER_ADVERT => {
                    return Err(DropReason::Ipv6RaFromGuest)
                }
                L4Info::Udp { src_port, .. } if src_port == DHCPV6_SERVER_PORT => {
                    return Err(DropReason::RogueDhcpServer)
                }
                _ => {}
            }
            if filter {
                if vif.allowed_ipv6.is_empty() {
                    return Err(DropReason::DisallowedEthertype);
                }
                let icmp = matches!(info.l4, L4Info::Icmpv6 { .. });
                let unspecified_ok = ip.src.is_unspecified() && icmp;
                if !unspecified_ok && !ipv6_allowed(vif, ip.src) {
                    return Err(DropReason::SpoofedSourceIp);
                }
                if let L4Info::Icmpv6 { msg_type, .. } = info.l4 {
                    if msg_type == icmp6::NEIGHBOR_ADVERT {
                        let target = frame
                            .get(usize::from(info.l4_offset)..)
                            .and_then(|b| Icmpv6Packet::new_checked(b).ok())
                            .and_then(|p| p.nd_target())
                            .ok_or(DropReason::MalformedHeader)?;
                        if !ipv6_allowed(vif, target) {
                            return Err(DropReason::SpoofedNeighborAdvert);
                        }
                    }
                }
            }
            Ok(())
        }
        // Other EtherTypes, 802.3/LLC, and frames with more than two VLAN tags.
        L3Info::None if filter => Err(DropReason::DisallowedEthertype),
        L3Info::None => Ok(()),
    }
}
