//! Issue-2 figures: xenstore READ/WRITE round trips per second over the unix socket
//! (1 and 8 clients, both journal sync policies) and grant-copy throughput.
//!
//! Run with `cargo bench -p hypervisor --bench hypervisor` (scripts/bench does).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hypervisor::grant::{
    grant_copy, CopyPtr, GntSt, GrantCopy, GrantTable, GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF,
};
use hypervisor::journal::SyncPolicy;
use hypervisor::memory::GuestMemory;
use hypervisor::xenstore::wire::MsgType;
use hypervisor::xenstored::{Xenstored, XenstoredConfig};
use hypervisor::xs_socket::SocketClient;

const RUN: Duration = Duration::from_secs(2);

fn xenstore_rtt(clients: usize, write: bool, sync: SyncPolicy) -> f64 {
    let dir = std::env::temp_dir().join(format!(
        "domnet-bench-xs-{}-{clients}-{write}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = XenstoredConfig::new(&dir.join("run"), &dir.join("state"));
    cfg.sync = sync;
    let (xs, _) = Xenstored::start(cfg).expect("start xenstored");
    let sock = xs.dom0_socket();
    {
        let mut c = SocketClient::connect(&sock).unwrap();
        for i in 0..clients {
            c.write(&format!("/bench/c{i}"), b"value").unwrap();
        }
    }
    let start = Arc::new(std::sync::Barrier::new(clients + 1));
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let sock = sock.clone();
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                let mut c = SocketClient::connect(&sock).unwrap();
                let path = format!("/bench/c{i}\0");
                let mut wpayload = path.as_bytes().to_vec();
                wpayload.extend_from_slice(b"value");
                start.wait();
                let t0 = Instant::now();
                let mut n = 0u64;
                while t0.elapsed() < RUN {
                    for _ in 0..64 {
                        if write {
                            c.request(MsgType::Write, 0, &wpayload).unwrap();
                        } else {
                            c.request(MsgType::Read, 0, path.as_bytes()).unwrap();
                        }
                    }
                    n += 64;
                }
                n as f64 / t0.elapsed().as_secs_f64()
            })
        })
        .collect();
    start.wait();
    let total: f64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    xs.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    total
}

fn grant_copy_gbps(len: u16) -> (f64, f64) {
    let frames = 64;
    let mk = |d| {
        Arc::new(GrantTable::new(
            d,
            Arc::new(GuestMemory::new("bench", frames).unwrap()),
            1,
        ))
    };
    let (dom0, a, b) = (mk(0), mk(1), mk(2));
    for r in 0..32u32 {
        a.offer(8 + r, 0, u64::from(16 + r), true).unwrap();
        b.offer(8 + r, 0, u64::from(16 + r), false).unwrap();
    }
    let tables = [Arc::clone(&dom0), Arc::clone(&a), Arc::clone(&b)];
    let lookup = |d: u16| tables.get(d as usize).cloned();
    let mut ops: Vec<GrantCopy> = (0..32u64)
        .map(|r| GrantCopy {
            source: CopyPtr {
                gref_or_gfn: 8 + r,
                domid: 1,
                offset: 0,
            },
            dest: CopyPtr {
                gref_or_gfn: 8 + r,
                domid: 2,
                offset: 0,
            },
            len,
            flags: GNTCOPY_SOURCE_GREF | GNTCOPY_DEST_GREF,
            status: GntSt::Okay,
        })
        .collect();
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < RUN {
        for _ in 0..256 {
            grant_copy(&dom0, &lookup, &mut ops);
        }
        n += 256 * ops.len() as u64;
    }
    assert!(ops.iter().all(|o| o.status == GntSt::Okay));
    let secs = t0.elapsed().as_secs_f64();
    (n as f64 / secs, n as f64 * f64::from(len) / secs / 1e9)
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    println!(
        "xenstore round trips over the dom0 unix socket ({}-second runs)",
        RUN.as_secs()
    );
    println!(
        "{:<8} {:<6} {:<12} {:>14}",
        "op", "clients", "journal", "round trips/s"
    );
    for (write, sync) in [
        (false, SyncPolicy::Data),
        (true, SyncPolicy::Data),
        (true, SyncPolicy::Write),
    ] {
        for clients in [1, 8] {
            let rate = xenstore_rtt(clients, write, sync);
            println!(
                "{:<8} {:<6} {:<12} {:>14.0}",
                if write { "WRITE" } else { "READ" },
                clients,
                match sync {
                    SyncPolicy::Data => "fdatasync",
                    SyncPolicy::Write => "write",
                },
                rate
            );
        }
    }
    println!();
    println!("grant copy, grant to grant (batches of 32, one thread)");
    println!("{:<8} {:>14} {:>10}", "bytes", "copies/s", "GB/s");
    for len in [64u16, 4096] {
        let (ops, gbs) = grant_copy_gbps(len);
        println!("{:<8} {:>14.0} {:>10.2}", len, ops, gbs);
    }
}
