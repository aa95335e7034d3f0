//! A network namespace joined to the test's namespace by a veth pair, for tests that put a
//! server behind a bad network: `tc` shaping, and outages (the link set down).
//! Needs root (CI and the development machines run the tests as root) and iproute2.

use std::process::Command;

/// A namespace `leafns<n>` with `10.77.<n>.2` inside and `10.77.<n>.1` on the test's side.
/// Dropping it deletes the namespace and the veth pair (stop the servers in it first).
#[derive(Debug)]
pub struct NetNs {
    name: String,
    host_if: String,
    ns_if: String,
    host_addr: String,
    ns_addr: String,
}

/// Runs `ip`/`tc` with `args`.
///
/// # Panics
/// When the command cannot run or fails, with its output.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (iproute2 is needed): {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetNs {
    /// Creates the namespace and the veth pair and brings them up.
    ///
    /// # Panics
    /// When not running as root, or when `ip` fails.
    pub fn create() -> NetNs {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "network namespace tests need root (CI runs them as root)"
        );
        // Distinct within this process (a counter) and, likely, from other test processes.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = u8::try_from((std::process::id() * 7 + k) % 250).unwrap_or(0) + 1;
        let ns = NetNs {
            name: format!("leafns{n}"),
            host_if: format!("lfh{n}"),
            ns_if: format!("lfn{n}"),
            host_addr: format!("10.77.{n}.1"),
            ns_addr: format!("10.77.{n}.2"),
        };
        // Leftovers of an earlier, killed run with the same number.
        let _ = Command::new("ip").args(["netns", "del", &ns.name]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &ns.host_if])
            .output();
        run("ip", &["netns", "add", &ns.name]);
        run(
            "ip",
            &[
                "link",
                "add",
                &ns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &ns.ns_if,
            ],
        );
        run("ip", &["link", "set", &ns.ns_if, "netns", &ns.name]);
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", ns.host_addr),
                "dev",
                &ns.host_if,
            ],
        );
        run("ip", &["link", "set", &ns.host_if, "up"]);
        run(
            "ip",
            &[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{}/24", ns.ns_addr),
                "dev",
                &ns.ns_if,
            ],
        );
        run("ip", &["-n", &ns.name, "link", "set", &ns.ns_if, "up"]);
        run("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address on the test's side of the veth pair.
    pub fn host_addr(&self) -> &str {
        &self.host_addr
    }

    /// The address inside the namespace.
    pub fn ns_addr(&self) -> &str {
        &self.ns_addr
    }

    /// Applies a `tc` queueing discipline (e.g. `tbf rate 2mbit burst 32kbit latency 500ms`,
    /// or `netem delay 200ms loss 5%` on kernels that have netem) to both ends.
    pub fn qdisc(&self, spec: &str) {
        let spec: Vec<&str> = spec.split_whitespace().collect();
        let mut host = vec!["qdisc", "replace", "dev", &self.host_if, "root"];
        host.extend(&spec);
        run("tc", &host);
        let mut inner = vec![
            "-n",
            &self.name,
            "qdisc",
            "replace",
            "dev",
            &self.ns_if,
            "root",
        ];
        inner.extend(&spec);
        run("tc", &inner);
    }

    /// Sets the link up or down (an outage: packets stop both ways).
    pub fn set_link(&self, up: bool) {
        run(
            "ip",
            &["link", "set", &self.host_if, if up { "up" } else { "down" }],
        );
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}
