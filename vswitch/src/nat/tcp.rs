//! The TCP connection-tracking state machine and its timeouts, reduced from Linux
//! `nf_conntrack_proto_tcp.c` (robustness.md §3 c4).
//!
//! States and default timeouts are Linux's (`nf_conntrack-sysctl.rst`): SYN_SENT 120 s,
//! SYN_RECV 60 s, ESTABLISHED 432000 s, FIN_WAIT 120 s, CLOSE_WAIT 60 s, LAST_ACK 30 s,
//! TIME_WAIT 120 s, CLOSE 10 s. Flag combinations Linux's `tcp_valid_flags` rejects are
//! INVALID. Sequence-window tracking is not done (as with `nf_conntrack_tcp_be_liberal`):
//! an RST in any state closes the connection — except that the NAT never applies, in
//! SYN_SENT, a reset that does not acknowledge the SYN (RFC 793's one acceptable
//! reset there), and removes at once a connection that only a reset ever answered.

use core::time::Duration;

use crate::wire::TcpFlags;

/// Which way a packet travels relative to the connection's first packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Same direction as the first packet.
    Original,
    /// The answering direction.
    Reply,
}

impl Dir {
    /// The other direction.
    pub const fn other(self) -> Dir {
        match self {
            Dir::Original => Dir::Reply,
            Dir::Reply => Dir::Original,
        }
    }
}

/// TCP connection states (Linux `tcp_conntrack`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcpState {
    /// SYN seen in the original direction.
    SynSent,
    /// SYN-ACK seen in reply.
    SynRecv,
    /// Three-way handshake complete.
    Established,
    /// One side sent FIN.
    FinWait,
    /// The other side acknowledged the first FIN.
    CloseWait,
    /// Both sides sent FIN.
    LastAck,
    /// The second FIN was acknowledged.
    TimeWait,
    /// Reset.
    Close,
}

/// TCP state plus which side closed first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcpTrack {
    /// Current state.
    pub state: TcpState,
    /// The direction that sent the first FIN.
    pub first_fin: Option<Dir>,
}

impl TcpTrack {
    /// A connection opened by a SYN.
    pub const fn new() -> Self {
        TcpTrack {
            state: TcpState::SynSent,
            first_fin: None,
        }
    }

    /// Advances on a packet with `flags` travelling `dir` (already known to be valid).
    pub fn update(&mut self, dir: Dir, flags: TcpFlags) {
        use TcpState::*;
        let syn = flags.contains(TcpFlags::SYN);
        let ack = flags.contains(TcpFlags::ACK);
        let fin = flags.contains(TcpFlags::FIN);
        if flags.contains(TcpFlags::RST) {
            self.state = Close;
            return;
        }
        if syn {
            self.state = match (self.state, dir, ack) {
                (SynSent | SynRecv, Dir::Reply, true) => SynRecv,
                // Simultaneous open.
                (SynSent, Dir::Reply, false) => SynRecv,
                // A new SYN on a closed tuple reopens it (Linux allows this from
                // TIME_WAIT and CLOSE).
                (SynSent | TimeWait | Close, Dir::Original, false) => {
                    self.first_fin = None;
                    SynSent
                }
                (s, _, _) => s,
            };
            return;
        }
        if fin {
            self.state = match (self.state, self.first_fin) {
                (SynRecv | Established, _) => {
                    self.first_fin = Some(dir);
                    FinWait
                }
                (FinWait | CloseWait, Some(first)) if first != dir => LastAck,
                (s, _) => s,
            };
            return;
        }
        if ack {
            self.state = match (self.state, self.first_fin) {
                (SynRecv, _) if dir == Dir::Original => Established,
                (FinWait, Some(first)) if first != dir => CloseWait,
                (LastAck, Some(first)) if first == dir => TimeWait,
                (s, _) => s,
            };
        }
    }

    /// Established at least once (Linux `IPS_ASSURED` for TCP).
    pub fn is_assured(&self) -> bool {
        !matches!(self.state, TcpState::SynSent | TcpState::SynRecv)
    }
}

impl Default for TcpTrack {
    fn default() -> Self {
        TcpTrack::new()
    }
}

/// Linux `tcp_valid_flags`: with ECE, CWR and PSH ignored, only these combinations are
/// valid (SYN, SYN|URG, SYN|ACK, RST, RST|ACK, FIN|ACK, FIN|ACK|URG, ACK, ACK|URG).
pub fn valid_flags(flags: TcpFlags) -> bool {
    const S: u8 = TcpFlags::SYN.0;
    const A: u8 = TcpFlags::ACK.0;
    const R: u8 = TcpFlags::RST.0;
    const F: u8 = TcpFlags::FIN.0;
    const U: u8 = TcpFlags::URG.0;
    const VALID: [u8; 9] = [S, S | U, S | A, R, R | A, F | A, F | A | U, A, A | U];
    let f = flags.0 & !(TcpFlags::ECE.0 | TcpFlags::CWR.0 | TcpFlags::PSH.0);
    VALID.contains(&f)
}

/// Whether a packet may open a connection: a SYN without ACK (Linux `tcp_new`). The
/// NAT also picks up a guest's mid-stream segments (see `Nat::may_pick_up`).
pub fn opens_connection(flags: TcpFlags) -> bool {
    valid_flags(flags) && flags.contains(TcpFlags::SYN) && !flags.contains(TcpFlags::ACK)
}

/// Per-state timeouts (Linux `nf_conntrack_*_timeout*` defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP SYN_SENT (120 s).
    pub tcp_syn_sent: Duration,
    /// TCP SYN_RECV (60 s).
    pub tcp_syn_recv: Duration,
    /// TCP ESTABLISHED (432000 s = 5 days).
    pub tcp_established: Duration,
    /// TCP FIN_WAIT (120 s).
    pub tcp_fin_wait: Duration,
    /// TCP CLOSE_WAIT (60 s).
    pub tcp_close_wait: Duration,
    /// TCP LAST_ACK (30 s).
    pub tcp_last_ack: Duration,
    /// TCP TIME_WAIT (120 s).
    pub tcp_time_wait: Duration,
    /// TCP CLOSE (10 s).
    pub tcp_close: Duration,
    /// UDP before any reply (30 s, `nf_conntrack_udp_timeout`).
    pub udp_unreplied: Duration,
    /// UDP once replied (120 s, `nf_conntrack_udp_timeout_stream`).
    pub udp_replied: Duration,
    /// ICMP echo (30 s).
    pub icmp: Duration,
    /// Other protocols (600 s, `nf_conntrack_generic_timeout`).
    pub generic: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn_sent: Duration::from_secs(120),
            tcp_syn_recv: Duration::from_secs(60),
            tcp_established: Duration::from_secs(432_000),
            tcp_fin_wait: Duration::from_secs(120),
            tcp_close_wait: Duration::from_secs(60),
            tcp_last_ack: Duration::from_secs(30),
            tcp_time_wait: Duration::from_secs(120),
            tcp_close: Duration::from_secs(10),
            udp_unreplied: Duration::from_secs(30),
            udp_replied: Duration::from_secs(120),
            icmp: Duration::from_secs(30),
            generic: Duration::from_secs(600),
        }
    }
}

impl Timeouts {
    /// The timeout of a TCP state.
    pub const fn tcp(&self, s: TcpState) -> Duration {
        match s {
            TcpState::SynSent => self.tcp_syn_sent,
            TcpState::SynRecv => self.tcp_syn_recv,
            TcpState::Established => self.tcp_established,
            TcpState::FinWait => self.tcp_fin_wait,
            TcpState::CloseWait => self.tcp_close_wait,
            TcpState::LastAck => self.tcp_last_ack,
            TcpState::TimeWait => self.tcp_time_wait,
            TcpState::Close => self.tcp_close,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYN: TcpFlags = TcpFlags::SYN;
    const ACK: TcpFlags = TcpFlags::ACK;
    const FIN: TcpFlags = TcpFlags(0x11);
    const SYNACK: TcpFlags = TcpFlags(0x12);

    #[test]
    fn handshake_and_orderly_close() {
        let mut t = TcpTrack::new();
        t.update(Dir::Reply, SYNACK);
        assert_eq!(t.state, TcpState::SynRecv);
        assert!(!t.is_assured());
        t.update(Dir::Original, ACK);
        assert_eq!(t.state, TcpState::Established);
        assert!(t.is_assured());
        t.update(Dir::Original, FIN);
        assert_eq!(t.state, TcpState::FinWait);
        t.update(Dir::Original, ACK); // same side: nothing
        assert_eq!(t.state, TcpState::FinWait);
        t.update(Dir::Reply, ACK);
        assert_eq!(t.state, TcpState::CloseWait);
        t.update(Dir::Reply, FIN);
        assert_eq!(t.state, TcpState::LastAck);
        t.update(Dir::Original, ACK);
        assert_eq!(t.state, TcpState::TimeWait);
        // A new SYN reopens the tuple.
        t.update(Dir::Original, SYN);
        assert_eq!(t.state, TcpState::SynSent);
        assert_eq!(t.first_fin, None);
    }

    #[test]
    fn fin_ack_together_and_rst() {
        let mut t = TcpTrack {
            state: TcpState::Established,
            first_fin: None,
        };
        t.update(Dir::Reply, FIN);
        t.update(Dir::Original, FIN); // FIN|ACK from the other side at once
        assert_eq!(t.state, TcpState::LastAck);
        t.update(Dir::Reply, ACK);
        assert_eq!(t.state, TcpState::TimeWait);
        t.update(Dir::Reply, TcpFlags::RST);
        assert_eq!(t.state, TcpState::Close);
        assert_eq!(Timeouts::default().tcp(t.state), Duration::from_secs(10));
    }

    #[test]
    fn flag_validity() {
        for ok in [
            SYN,
            SYNACK,
            ACK,
            FIN,
            TcpFlags::RST,
            TcpFlags(0x14),
            TcpFlags(0x18),
            TcpFlags(0xd2),
        ] {
            assert!(valid_flags(ok), "{ok:?}");
        }
        for bad in [
            TcpFlags(0),
            TcpFlags(0x03),
            TcpFlags(0x06),
            TcpFlags(0x01),
            TcpFlags(0x3f),
            TcpFlags(0x29),
        ] {
            assert!(!valid_flags(bad), "{bad:?}");
        }
        assert!(opens_connection(SYN));
        assert!(!opens_connection(SYNACK));
        assert!(!opens_connection(ACK));
    }
}
