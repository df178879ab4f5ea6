//! The frontend's xenstore keys (xen-networking.md §1.9): what netfront writes under
//! `device/vif/<N>/` ([`FrontendKeys`]) and what netback reads back at connect
//! ([`FrontendRings`]).
//!
//! Every value the backend reads was written by the guest, so each is validated
//! (robustness.md a14, the 2026 zero-queue fix): numbers are plain unsigned decimals that
//! fit their type, flags are `0` or `1`, `multi-queue-num-queues` must be exactly 1 when
//! present (this backend runs one queue, and 0 is refused as Linux should), and
//! `request-rx-copy=1` is required because rx-copy is the only receive mode.

use hypervisor::evtchn::Port;
use hypervisor::grant::GrantRef;

/// Why the frontend's keys were refused (the backend then fails the connection, as Linux
/// `xenbus_dev_fatal` does).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A required key is absent.
    #[error("frontend key `{0}` is missing")]
    Missing(&'static str),
    /// A key's value is not what the protocol allows.
    #[error("frontend key `{key}` has invalid value {value:?}: {why}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// The value found.
        value: String,
        /// What was expected.
        why: &'static str,
    },
    /// `multi-queue-num-queues` outside 1..=1 ("guest requested %u queues").
    #[error("frontend requested {0} queues; this backend supports exactly 1")]
    Queues(u64),
    /// The frontend did not request rx-copy mode (page flipping is not implemented).
    #[error(
        "frontend did not request rx-copy (request-rx-copy=1); page flipping is not supported"
    )]
    NoRxCopy,
}

/// How the frontend signals: one port for both rings, or one per ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventChannelKeys {
    /// `event-channel-tx` / `event-channel-rx`.
    Split {
        /// The tx ring's port.
        tx: Port,
        /// The rx ring's port.
        rx: Port,
    },
    /// `event-channel`: both rings share one port.
    Single(Port),
}

/// Features a frontend announced (each absent key means the Linux default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrontendFeatures {
    /// `feature-rx-notify`: kicks after posting rx buffers (default 0).
    pub rx_notify: bool,
    /// `feature-sg`: accepts multi-slot rx packets (default 0).
    pub sg: bool,
    /// `feature-gso-tcpv4`: accepts TCPv4 GSO rx packets (default 0).
    pub gso_tcpv4: bool,
    /// `feature-gso-tcpv6`: accepts TCPv6 GSO rx packets (default 0).
    pub gso_tcpv6: bool,
    /// `feature-ipv6-csum-offload`: accepts IPv6 partial-checksum rx packets (default 0).
    pub ipv6_csum_offload: bool,
    /// `feature-no-csum-offload`: cannot take IPv4 partial-checksum rx packets (default 0).
    pub no_csum_offload: bool,
}

/// What netback needs from the frontend's directory to connect one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrontendRings {
    /// `tx-ring-ref`.
    pub tx_ring_ref: GrantRef,
    /// `rx-ring-ref`.
    pub rx_ring_ref: GrantRef,
    /// The event channel(s).
    pub event_channels: EventChannelKeys,
    /// The announced features.
    pub features: FrontendFeatures,
}

fn decimal(key: &'static str, value: String, max: u64) -> Result<u64, KeyError> {
    let invalid = |why| KeyError::Invalid {
        key,
        value: value.clone(),
        why,
    };
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("an unsigned decimal number"));
    }
    let n: u64 = value.parse().map_err(|_| invalid("a number that fits"))?;
    if n > max {
        return Err(invalid("a number in range"));
    }
    Ok(n)
}

fn flag(get: &impl Fn(&str) -> Option<String>, key: &'static str) -> Result<bool, KeyError> {
    match get(key) {
        None => Ok(false),
        Some(v) if v == "0" => Ok(false),
        Some(v) if v == "1" => Ok(true),
        Some(value) => Err(KeyError::Invalid {
            key,
            value,
            why: "0 or 1",
        }),
    }
}

impl FrontendRings {
    /// Reads and validates the frontend's keys through `get(key)` (relative to the
    /// frontend's `device/vif/<N>` directory), in Linux netback's `connect()` order:
    /// queue count, features, then the ring references and event channels (split ports
    /// tried first, then the single `event-channel`).
    pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<FrontendRings, KeyError> {
        if let Some(v) = get("multi-queue-num-queues") {
            let n = decimal("multi-queue-num-queues", v, u64::MAX)?;
            if n != 1 {
                return Err(KeyError::Queues(n));
            }
        }
        match get("request-rx-copy") {
            None => return Err(KeyError::NoRxCopy),
            Some(v) => match decimal("request-rx-copy", v, 1)? {
                1 => {}
                _ => return Err(KeyError::NoRxCopy),
            },
        }
        let features = FrontendFeatures {
            rx_notify: flag(&get, "feature-rx-notify")?,
            sg: flag(&get, "feature-sg")?,
            gso_tcpv4: flag(&get, "feature-gso-tcpv4")?,
            gso_tcpv6: flag(&get, "feature-gso-tcpv6")?,
            ipv6_csum_offload: flag(&get, "feature-ipv6-csum-offload")?,
            no_csum_offload: flag(&get, "feature-no-csum-offload")?,
        };
        let gref = |key: &'static str| -> Result<GrantRef, KeyError> {
            let v = get(key).ok_or(KeyError::Missing(key))?;
            Ok(decimal(key, v, u64::from(u32::MAX))? as GrantRef)
        };
        let port = |key: &'static str| -> Result<Option<Port>, KeyError> {
            match get(key) {
                None => Ok(None),
                Some(v) => {
                    let p = decimal(key, v.clone(), u64::from(u32::MAX))? as Port;
                    if p == 0 {
                        return Err(KeyError::Invalid {
                            key,
                            value: v,
                            why: "a port other than 0 (reserved)",
                        });
                    }
                    Ok(Some(p))
                }
            }
        };
        let tx_ring_ref = gref("tx-ring-ref")?;
        let rx_ring_ref = gref("rx-ring-ref")?;
        let event_channels = match (port("event-channel-tx")?, port("event-channel-rx")?) {
            (Some(tx), Some(rx)) => EventChannelKeys::Split { tx, rx },
            (None, None) => EventChannelKeys::Single(
                port("event-channel")?.ok_or(KeyError::Missing("event-channel"))?,
            ),
            (Some(_), None) => return Err(KeyError::Missing("event-channel-rx")),
            (None, Some(_)) => return Err(KeyError::Missing("event-channel-tx")),
        };
        Ok(FrontendRings {
            tx_ring_ref,
            rx_ring_ref,
            event_channels,
            features,
        })
    }
}

/// The keys a netfront publishes for one single-queue vif with split event channels
/// (Linux netfront's `talk_to_netback` for one queue, §1.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrontendKeys {
    /// `tx-ring-ref`.
    pub tx_ring_ref: GrantRef,
    /// `rx-ring-ref`.
    pub rx_ring_ref: GrantRef,
    /// `event-channel-tx`.
    pub event_channel_tx: Port,
    /// `event-channel-rx`.
    pub event_channel_rx: Port,
}

impl FrontendKeys {
    /// The (key, value) pairs to write in the frontend directory, in one transaction:
    /// ring references, ports, `request-rx-copy=1` and the features this netfront
    /// supports (rx-notify, sg, TCPv4/v6 GSO, IPv6 checksum offload).
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("tx-ring-ref", self.tx_ring_ref.to_string()),
            ("rx-ring-ref", self.rx_ring_ref.to_string()),
            ("event-channel-tx", self.event_channel_tx.to_string()),
            ("event-channel-rx", self.event_channel_rx.to_string()),
            ("request-rx-copy", "1".into()),
            ("feature-rx-notify", "1".into()),
            ("feature-sg", "1".into()),
            ("feature-gso-tcpv4", "1".into()),
            ("feature-gso-tcpv6", "1".into()),
            ("feature-ipv6-csum-offload", "1".into()),
        ]
    }

    /// What a backend reading [`FrontendKeys::pairs`] gets (for in-process wiring and
    /// tests that skip xenstore).
    pub fn rings(&self) -> FrontendRings {
        let pairs = self.pairs();
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.clone())
        };
        FrontendRings::parse(get).unwrap_or(FrontendRings {
            tx_ring_ref: self.tx_ring_ref,
            rx_ring_ref: self.rx_ring_ref,
            event_channels: EventChannelKeys::Split {
                tx: self.event_channel_tx,
                rx: self.event_channel_rx,
            },
            features: FrontendFeatures::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<FrontendRings, KeyError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        FrontendRings::parse(|k| m.get(k).cloned())
    }

    const BASE: &[(&str, &str)] = &[
        ("tx-ring-ref", "8"),
        ("rx-ring-ref", "9"),
        ("event-channel-tx", "3"),
        ("event-channel-rx", "4"),
        ("request-rx-copy", "1"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v: Vec<(&str, &str)> = BASE.to_vec();
        for (k, val) in extra {
            v.retain(|(kk, _)| kk != k);
            v.push((k, val));
        }
        v
    }

    proptest::proptest! {
        /// Whatever a guest writes, parsing answers (never panics), and anything accepted
        /// is exactly what the keys say.
        #[test]
        fn arbitrary_values_never_panic(
            vals in proptest::collection::vec("[0-9a-z +-]{0,24}", 10),
            present in proptest::collection::vec(proptest::bool::ANY, 10),
        ) {
            const KEYS: [&str; 10] = [
                "tx-ring-ref", "rx-ring-ref", "event-channel-tx", "event-channel-rx",
                "event-channel", "request-rx-copy", "multi-queue-num-queues",
                "feature-sg", "feature-rx-notify", "feature-no-csum-offload",
            ];
            let m: HashMap<String, String> = KEYS
                .iter()
                .zip(vals.iter().zip(&present))
                .filter(|(_, (_, p))| **p)
                .map(|(k, (v, _))| (k.to_string(), v.clone()))
                .collect();
            if let Ok(r) = FrontendRings::parse(|k| m.get(k).cloned()) {
                proptest::prop_assert_eq!(m["tx-ring-ref"].parse::<u32>(), Ok(r.tx_ring_ref));
                proptest::prop_assert_eq!(m["request-rx-copy"].as_str(), "1");
            }
        }
    }

    #[test]
    fn keys_round_trip() {
        let k = FrontendKeys {
            tx_ring_ref: 8,
            rx_ring_ref: 9,
            event_channel_tx: 5,
            event_channel_rx: 6,
        };
        let r = k.rings();
        assert_eq!(r.tx_ring_ref, 8);
        assert_eq!(r.rx_ring_ref, 9);
        assert_eq!(r.event_channels, EventChannelKeys::Split { tx: 5, rx: 6 });
        assert_eq!(
            r.features,
            FrontendFeatures {
                rx_notify: true,
                sg: true,
                gso_tcpv4: true,
                gso_tcpv6: true,
                ipv6_csum_offload: true,
                no_csum_offload: false,
            }
        );
        assert!(k.pairs().contains(&("request-rx-copy", "1".to_string())));
    }

    #[test]
    fn defaults_and_single_channel() {
        let r = parse(&[
            ("tx-ring-ref", "100"),
            ("rx-ring-ref", "101"),
            ("event-channel", "7"),
            ("request-rx-copy", "1"),
            ("multi-queue-num-queues", "1"),
            ("feature-no-csum-offload", "1"),
        ])
        .unwrap();
        assert_eq!(r.event_channels, EventChannelKeys::Single(7));
        assert!(r.features.no_csum_offload && !r.features.sg && !r.features.rx_notify);
    }

    #[test]
    fn every_value_is_validated() {
        assert_eq!(
            parse(&with(&[("multi-queue-num-queues", "0")])),
            Err(KeyError::Queues(0))
        );
        assert_eq!(
            parse(&with(&[("multi-queue-num-queues", "2")])),
            Err(KeyError::Queues(2))
        );
        let no_copy: Vec<_> = BASE
            .iter()
            .copied()
            .filter(|(k, _)| *k != "request-rx-copy")
            .collect();
        assert_eq!(parse(&no_copy), Err(KeyError::NoRxCopy));
        assert_eq!(
            parse(&with(&[("request-rx-copy", "0")])),
            Err(KeyError::NoRxCopy)
        );
        for bad in [
            "",
            "-1",
            "+8",
            " 8",
            "8 ",
            "0x8",
            "4294967296",
            "99999999999999999999999",
        ] {
            assert!(
                matches!(
                    parse(&with(&[("tx-ring-ref", bad)])),
                    Err(KeyError::Invalid {
                        key: "tx-ring-ref",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse(&with(&[("feature-sg", "2")])),
            Err(KeyError::Invalid {
                key: "feature-sg",
                ..
            })
        ));
        assert!(matches!(
            parse(&with(&[("event-channel-tx", "0")])),
            Err(KeyError::Invalid { .. })
        ));
        let half: Vec<_> = BASE
            .iter()
            .copied()
            .filter(|(k, _)| *k != "event-channel-rx")
            .collect();
        assert_eq!(parse(&half), Err(KeyError::Missing("event-channel-rx")));
        let none: Vec<_> = BASE
            .iter()
            .copied()
            .filter(|(k, _)| !k.starts_with("event-channel"))
            .collect();
        assert_eq!(parse(&none), Err(KeyError::Missing("event-channel")));
        let noref: Vec<_> = BASE
            .iter()
            .copied()
            .filter(|(k, _)| *k != "rx-ring-ref")
            .collect();
        assert_eq!(parse(&noref), Err(KeyError::Missing("rx-ring-ref")));
    }
}
