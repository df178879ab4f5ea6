//! Why netback dropped a packet or disabled a vif: closed enums with stable snake_case
//! names, and plain counters indexed by them (robustness.md §3(a), §4.3).
//!
//! "Drop": the slots are consumed and answered with errors, the vif stays up.
//! "Fatal": the frontend is misbehaving; the vif is disabled (carrier off, rings no longer
//! consumed) and the rest of the fabric is unaffected (netback's `xenvif_fatal_tx_err`).

use core::fmt;

macro_rules! reasons {
    ($(#[$tdoc:meta])* $ty:ident { $($(#[$doc:meta])* $variant:ident => $name:literal,)* }) => {
        $(#[$tdoc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $ty {
            $($(#[$doc])* $variant,)*
        }

        impl $ty {
            /// Every reason, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant,)*];
            /// Number of reasons.
            pub const COUNT: usize = Self::ALL.len();

            /// The stable snake_case name used in counters and logs.
            pub const fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)*
                }
            }

            /// The reason with this name.
            pub fn from_name(name: &str) -> Option<$ty> {
                match name {
                    $($name => Some($ty::$variant),)*
                    _ => None,
                }
            }

            /// Dense index (for counter arrays).
            pub const fn index(self) -> usize {
                self as usize
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

reasons! {
    /// Why a packet was dropped without disabling the vif.
    DropReason {
        /// A tx packet used 19 or 20 follow-on slots (more than `XEN_NETBK_LEGACY_SLOTS_MAX`
        /// = 18 but fewer than `fatal_skb_slots`): every slot answered ERROR (a3).
        TxTooManySlots => "tx_too_many_slots",
        /// The data in a tx packet's first slot is shorter than an Ethernet header (14),
        /// including runt and zero-length packets (a5, XSA-448).
        TxFirstSlotTooShort => "tx_first_slot_too_short",
        /// A follow-on tx slot is bigger than what remains of the first slot's total — a
        /// ≥ 64 KiB frame whose u16 size overflowed (a6; "buggy frontends do this").
        TxSlotExceedsTotal => "tx_slot_exceeds_total",
        /// A grant copy of a tx packet's data failed (bad/revoked/foreign gref, a8); that
        /// slot is answered ERROR.
        TxGrantCopyFailed => "tx_grant_copy_failed",
        /// The rx backlog already holds `XENVIF_RX_QUEUE_BYTES` (512 KiB) (a11, XSA-392).
        RxBacklogFull => "rx_backlog_full",
        /// A packet waited longer than the drain timeout for rx buffers (a11).
        RxExpired => "rx_expired",
        /// The vif's carrier is off because the guest stalled its rx ring (a11).
        RxCarrierOff => "rx_carrier_off",
        /// The packet needs more rx slots than a frontend must accept (> 18 data slots).
        RxPacketTooLarge => "rx_packet_too_large",
        /// A grant copy into a posted rx buffer failed; the slot carries the GNTST status.
        RxGrantCopyFailed => "rx_grant_copy_failed",
    }
}

reasons! {
    /// Why a vif was disabled: the frontend broke the protocol.
    FatalReason {
        /// The peer's producer index claims more entries than the ring holds, or went
        /// backwards ("Impossible number of requests", a1/a2; `RingError::Overflow`).
        ImpossibleRequestCount => "impossible_request_count",
        /// A `more_data` chain runs past the requests the frontend has published
        /// ("Asked for %d slots but exceeds this limit", a4).
        SlotsExceedRequests => "slots_exceed_requests",
        /// A tx packet reached `fatal_skb_slots` (default 20) follow-on slots (a3).
        MaliciousSlotCount => "malicious_slot_count",
        /// A data slot's `offset + size` crosses the 4096-byte page (a7).
        CrossPageBoundary => "cross_page_boundary",
        /// An extra-info chain ran off the end of the published requests (a10).
        MissingExtraInfo => "missing_extra_info",
        /// An extra-info type of 0 or ≥ `XEN_NETIF_EXTRA_TYPE_MAX` (a9).
        InvalidExtraType => "invalid_extra_type",
        /// A GSO extra with size 0 (a9).
        GsoSizeZero => "gso_size_zero",
        /// A GSO extra with a type other than TCPv4/TCPv6 (a9).
        BadGsoType => "bad_gso_type",
    }
}

/// Counters for one vif (or queue), one per drop and fatal reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonCounters {
    drops: [u64; DropReason::COUNT],
    fatals: [u64; FatalReason::COUNT],
}

impl Default for ReasonCounters {
    fn default() -> Self {
        ReasonCounters {
            drops: [0; DropReason::COUNT],
            fatals: [0; FatalReason::COUNT],
        }
    }
}

impl ReasonCounters {
    /// Counts `n` packets dropped for `reason`.
    pub fn drop_n(&mut self, reason: DropReason, n: u64) {
        if let Some(c) = self.drops.get_mut(reason.index()) {
            *c = c.saturating_add(n);
        }
    }

    /// Counts one packet dropped for `reason`.
    pub fn drop(&mut self, reason: DropReason) {
        self.drop_n(reason, 1);
    }

    /// Counts one fatal error.
    pub fn fatal(&mut self, reason: FatalReason) {
        if let Some(c) = self.fatals.get_mut(reason.index()) {
            *c = c.saturating_add(1);
        }
    }

    /// Packets dropped for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops.get(reason.index()).copied().unwrap_or(0)
    }

    /// Fatal errors for `reason`.
    pub fn fatals(&self, reason: FatalReason) -> u64 {
        self.fatals.get(reason.index()).copied().unwrap_or(0)
    }

    /// Σ drops over every reason.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().fold(0u64, |a, &b| a.saturating_add(b))
    }

    /// Non-zero drop counters by name, in declaration order.
    pub fn nonzero_drops(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|&r| (r, self.drops(r)))
            .filter(|&(_, n)| n > 0)
    }

    /// Non-zero fatal counters by name, in declaration order.
    pub fn nonzero_fatals(&self) -> impl Iterator<Item = (FatalReason, u64)> + '_ {
        FatalReason::ALL
            .iter()
            .map(|&r| (r, self.fatals(r)))
            .filter(|&(_, n)| n > 0)
    }
}

impl From<&crate::ring::RingError> for FatalReason {
    /// Every ring error at run time is the peer's fault: an impossible index.
    fn from(_: &crate::ring::RingError) -> FatalReason {
        FatalReason::ImpossibleRequestCount
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for r in DropReason::ALL {
            assert!(seen.insert(r.name()));
            assert!(r.name().chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            assert_eq!(DropReason::from_name(r.name()), Some(*r));
        }
        for r in FatalReason::ALL {
            assert!(seen.insert(r.name()));
            assert!(r.name().chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            assert_eq!(FatalReason::from_name(r.name()), Some(*r));
        }
        assert_eq!(DropReason::from_name("nope"), None);
        assert_eq!(
            FatalReason::CrossPageBoundary.to_string(),
            "cross_page_boundary"
        );
    }

    #[test]
    fn counters_count_by_reason() {
        let mut c = ReasonCounters::default();
        c.drop(DropReason::RxExpired);
        c.drop_n(DropReason::RxExpired, 2);
        c.drop(DropReason::TxTooManySlots);
        c.fatal(FatalReason::GsoSizeZero);
        assert_eq!(c.drops(DropReason::RxExpired), 3);
        assert_eq!(c.total_drops(), 4);
        assert_eq!(c.fatals(FatalReason::GsoSizeZero), 1);
        assert_eq!(c.fatals(FatalReason::BadGsoType), 0);
        let nz: Vec<_> = c.nonzero_drops().collect();
        assert_eq!(
            nz,
            [(DropReason::TxTooManySlots, 1), (DropReason::RxExpired, 3)]
        );
        assert_eq!(c.nonzero_fatals().count(), 1);
    }
}
