//! Network partitions between servers, each in its own network namespace (issue 22's failure
//! tests).
//!
//! The kernel the tests run on has no `sch_netem` (`tc qdisc add … netem` answers "Specified
//! qdisc kind is unknown"), so a partition is modelled with routes rather than packet loss:
//! every namespace has one veth whose other end is attached to a bridge in the test's
//! namespace (which has an address on the same /24, so the test's clients reach every
//! member). [`Lan::cut`] adds `blackhole` routes for the other side's addresses inside the
//! namespaces on both sides: new connections fail, established ones stop getting anything
//! through (a real partition, not a reset). [`Lan::heal`] deletes those routes. The test's
//! namespace is never cut off, so a client can stay connected to a minority member.
//!
//! Needs root and iproute2 (`.ci/run` installs it); fails with a clear message otherwise.
//! Everything (namespaces, veths, the bridge) is removed on drop, also when a test fails.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Runs `ip args`, panicking with its output when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip (iproute2 is needed): {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `ip args`, ignoring the outcome (clean-up).
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip").args(args).output();
}

/// A bridge in the test's namespace with `n` namespaces on it: namespace `i` has address
/// `10.78.<k>.<i + 2>`, the bridge `10.78.<k>.1` (`k` unique per test: pid and a counter).
#[derive(Debug)]
pub struct Lan {
    bridge: String,
    namespaces: Vec<String>,
    addrs: Vec<String>,
    /// The blackhole routes in place: (namespace index, address).
    cuts: Vec<(usize, String)>,
}

impl Lan {
    /// Creates the bridge and `n` namespaces (at most 8).
    ///
    /// # Panics
    /// When not running as root, or when `ip` fails.
    pub fn new(n: usize) -> Lan {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "partition tests need root (network namespaces, veths, a bridge); CI runs as root"
        );
        assert!((1..=8).contains(&n), "1 to 8 namespaces");
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let counter = NEXT.fetch_add(1, Ordering::Relaxed);
        let k = (std::process::id().wrapping_mul(31).wrapping_add(counter)) % 250 + 1;
        let bridge = format!("ptb{k}");
        // Leftovers of an earlier, killed run with the same number.
        for i in 0..8 {
            ip_quiet(&["netns", "del", &format!("ptns{k}-{i}")]);
            ip_quiet(&["link", "del", &format!("pt{k}h{i}")]);
        }
        ip_quiet(&["link", "del", &bridge]);
        let mut lan = Lan {
            bridge: bridge.clone(),
            namespaces: Vec::new(),
            addrs: Vec::new(),
            cuts: Vec::new(),
        };
        ip(&["link", "add", "name", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("10.78.{k}.1/24"), "dev", &bridge]);
        // Bridged traffic kept out of iptables (a host whose FORWARD policy is DROP, e.g. with
        // Docker, would otherwise cut the members apart from the start); best effort.
        for family in ["nf_call_iptables", "nf_call_ip6tables", "nf_call_arptables"] {
            ip_quiet(&["link", "set", "dev", &bridge, "type", "bridge", family, "0"]);
        }
        ip(&["link", "set", &bridge, "up"]);
        for i in 0..n {
            let ns = format!("ptns{k}-{i}");
            let host_if = format!("pt{k}h{i}");
            let ns_if = format!("pt{k}n{i}");
            let addr = format!("10.78.{k}.{}", i + 2);
            ip(&["netns", "add", &ns]);
            lan.namespaces.push(ns.clone());
            ip(&[
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ]);
            ip(&["link", "set", &ns_if, "netns", &ns]);
            ip(&["link", "set", &host_if, "master", &bridge]);
            ip(&["link", "set", &host_if, "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &ns_if,
            ]);
            ip(&["-n", &ns, "link", "set", &ns_if, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            lan.addrs.push(addr);
        }
        lan
    }

    /// Namespace `i`'s name (for `ip netns exec`).
    pub fn namespace(&self, i: usize) -> &str {
        &self.namespaces[i]
    }

    /// Namespace `i`'s address on the bridge.
    pub fn addr(&self, i: usize) -> &str {
        &self.addrs[i]
    }

    /// Cuts `side` off from every other namespace (both directions; the test's namespace
    /// still reaches all of them).
    pub fn cut(&mut self, side: &[usize]) {
        let others: Vec<usize> = (0..self.addrs.len())
            .filter(|i| !side.contains(i))
            .collect();
        for &a in side {
            for &b in &others {
                for (from, to) in [(a, b), (b, a)] {
                    let dest = format!("{}/32", self.addrs[to]);
                    ip(&[
                        "-n",
                        &self.namespaces[from],
                        "route",
                        "add",
                        "blackhole",
                        &dest,
                    ]);
                    self.cuts.push((from, dest));
                }
            }
        }
    }

    /// Removes every cut.
    pub fn heal(&mut self) {
        for (from, dest) in std::mem::take(&mut self.cuts) {
            ip(&[
                "-n",
                &self.namespaces[from],
                "route",
                "del",
                "blackhole",
                &dest,
            ]);
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth end, and with it the pair.
        for ns in &self.namespaces {
            ip_quiet(&["netns", "del", ns]);
        }
        ip_quiet(&["link", "del", &self.bridge]);
    }
}
