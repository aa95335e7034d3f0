//! Start-up code released once the server serves: the pages of its program that only
//! starting touched stop counting in its resident set (leafd and hubd both call
//! [`release_after_start`] once they accept clients).
//!
//! Starting the server runs code that never runs again: argument parsing (clap), the TOML reader
//! with its key paths (toml_edit, serde_path_to_error), every settings type's deserializer,
//! the store's open and repair paths. Each page of code it touches is mapped into the
//! process, and the kernel's fault-around maps the 64 KiB around it too, so after start-up
//! most of the binary's text is resident and stays so: on an idle gateway build that was 3.4 of
//! its 4.4 MiB of RSS, and the code that serving needs is a fraction of it (BENCHMARKS.md,
//! issue 24, "Idle RSS: start-up code released").
//!
//! The Linux kernel frees its own `__init` code after boot; a program cannot free its
//! mapped file, but it can drop the mapping's pages: `madvise(MADV_DONTNEED)` on a mapping of
//! the program file removes its pages from the process (the file's pages stay in the page
//! cache), and the code that runs afterwards faults back in from the cache, a minor fault
//! per 64 KiB, no disk read while the cache holds it. [`release_after_start`] does that twice:
//! when the server is ready (leafd: when it tells systemd so), and [`SETTLE`] later, once the tasks start-up spawned
//! (the accept loop, the JetStream and store tasks, the uplinks' first connection attempts,
//! the gateways opening their ports) have taken their first steps, which run code of their own
//! once only. Measured on the gateway build: 4.4 MiB released at ready, 2.9 MiB more after
//! the settling time (BENCHMARKS.md).
//!
//! **Why it cannot lose anything.** `MADV_DONTNEED` on a private file mapping throws away the
//! process's *private copies* of pages (a page written to is copied: anonymous memory) and
//! refills from the file. A page that was never written has no copy: dropping it loses
//! nothing. So only mappings that are file-backed, not writable, and hold no anonymous page
//! (`Anonymous: 0 kB` in `/proc/self/smaps`) are released: the code (`r-xp`) and the read-only
//! data (`r--p`) of the program and of shared libraries. The read-only part of the relocated
//! data (RELRO, `r--p` too, but written by the loader before it was protected) holds
//! anonymous pages and is left alone, as are the heap, stacks and writable data. None of the
//! released mappings can gain an anonymous page afterwards without `mprotect` (a debugger's
//! breakpoint written through ptrace would, and is the one thing a release racing it could
//! drop).
//!
//! What it buys besides the figure: mapped code is what the kernel's reclaim protects longest
//! (executable pages get another round on the active list), while unmapped page-cache pages are
//! the first to go under memory pressure, so on a small gateway the start-up code stops holding
//! memory the kernel could use. What it does not change: a cgroup's memory count (`systemctl status`, `memory.current`)
//! charges the page-cache pages of the file whether mapped or not; and the pages come back as
//! the server uses the code (a client's first connection maps the parser and routing paths).
//! Best effort: any failure is reported to the caller and changes nothing.

use std::io;
use std::time::Duration;

use tracing::debug;

/// How long after the first release the second one waits (see the module documentation).
pub const SETTLE: Duration = Duration::from_millis(500);

/// Releases the start-up pages now and once more [`SETTLE`] later (on the current tokio
/// runtime). Outcomes are logged at debug level; a failure changes nothing.
pub fn release_after_start() {
    log(release(), "at ready");
    tokio::spawn(async {
        tokio::time::sleep(SETTLE).await;
        log(release(), "after settling");
    });
}

fn log(outcome: io::Result<Released>, when: &str) {
    match outcome {
        Ok(r) => debug!(
            "start-up pages released {when}: {} KiB in {} mappings ({} left: written)",
            r.resident_kib, r.mappings, r.skipped
        ),
        Err(e) => debug!("start-up pages not released {when}: {e}"),
    }
}

/// What [`release`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Mappings whose pages were dropped.
    pub mappings: usize,
    /// Resident KiB they held before (from `smaps`).
    pub resident_kib: u64,
    /// Mappings left alone because they hold anonymous (written) pages.
    pub skipped: usize,
}

/// One mapping of `/proc/self/smaps`, as far as [`release`] needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
    /// `r-xp`, `r--p`, `rw-p`…
    perms: String,
    /// A path for a file mapping; empty, `[heap]`, `[stack]`, `[vdso]`… otherwise.
    path: String,
    rss_kib: u64,
    anonymous_kib: u64,
}

impl Mapping {
    /// A private, read-only file mapping: a candidate.
    fn is_read_only_file(&self) -> bool {
        let p = self.perms.as_bytes();
        p.len() == 4 && p[0] == b'r' && p[1] == b'-' && p[3] == b'p' && self.path.starts_with('/')
    }
}

/// Parses the text of `/proc/<pid>/smaps`. Lines it does not know are skipped.
fn parse_smaps(text: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((a, b)) = first.split_once('-') {
            // A mapping's header: range, perms, offset, dev, inode, [path].
            if let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                let perms = fields.next().unwrap_or_default().to_owned();
                let path = fields.nth(3).unwrap_or_default().to_owned();
                out.push(Mapping {
                    start,
                    end,
                    perms,
                    path,
                    rss_kib: 0,
                    anonymous_kib: 0,
                });
                continue;
            }
        }
        let kib = fields.next().and_then(|v| v.parse::<u64>().ok());
        if let (Some(m), Some(kib)) = (out.last_mut(), kib) {
            match first {
                "Rss:" => m.rss_kib = kib,
                "Anonymous:" => m.anonymous_kib = kib,
                _ => {}
            }
        }
    }
    out
}

/// Which mappings of `maps` may be released, and which read-only file mappings must not be.
fn choose(maps: &[Mapping]) -> (Vec<&Mapping>, usize) {
    let mut chosen = Vec::new();
    let mut skipped = 0;
    for m in maps.iter().filter(|m| m.is_read_only_file()) {
        if m.anonymous_kib == 0 {
            chosen.push(m);
        } else {
            skipped += 1;
        }
    }
    (chosen, skipped)
}

/// Drops the resident pages of this process's read-only file mappings that hold no written
/// page (see the module documentation). Linux only; elsewhere it does nothing.
pub fn release() -> io::Result<Released> {
    if !cfg!(target_os = "linux") {
        return Ok(Released::default());
    }
    let text = std::fs::read_to_string("/proc/self/smaps")?;
    let maps = parse_smaps(&text);
    let (chosen, skipped) = choose(&maps);
    let mut done = Released {
        skipped,
        ..Released::default()
    };
    for m in chosen {
        if m.rss_kib == 0 {
            continue;
        }
        // SAFETY: the range is a whole mapping of this process read from smaps, private,
        // not writable and file-backed with no anonymous page: MADV_DONTNEED only unmaps
        // page-cache pages, which the next access maps again with the same content. No Rust
        // reference is invalidated (the memory stays mapped and unchanged).
        let rc = unsafe {
            libc::madvise(
                m.start as *mut libc::c_void,
                m.end - m.start,
                libc::MADV_DONTNEED,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        done.mappings += 1;
        done.resident_kib += m.rss_kib;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
55d0a0000000-55d0a00ff000 r--p 00000000 fe:00 5899777                    /usr/bin/leafd
Size:               1020 kB
Rss:                 512 kB
Anonymous:             0 kB
55d0a00ff000-55d0a05b8000 r-xp 000fe000 fe:00 5899777                    /usr/bin/leafd
Size:               4836 kB
Rss:                3428 kB
Anonymous:             0 kB
55d0a05b8000-55d0a05d9000 r--p 005b6000 fe:00 5899777                    /usr/bin/leafd
Size:                132 kB
Rss:                 132 kB
Anonymous:           132 kB
55d0a05d9000-55d0a05de000 rw-p 005d6000 fe:00 5899777                    /usr/bin/leafd
Rss:                  20 kB
Anonymous:            20 kB
55d0a1000000-55d0a1100000 rw-p 00000000 00:00 0                          [heap]
Rss:                 172 kB
Anonymous:           172 kB
7ffd1000-7ffd2000 r-xp 00000000 00:00 0                                  [vdso]
Rss:                   4 kB
Anonymous:             0 kB
7ffd3000-7ffd4000 r--p 00000000 00:00 0
Rss:                   4 kB
Anonymous:             0 kB
";

    #[test]
    fn only_unwritten_read_only_file_mappings_are_chosen() {
        let maps = parse_smaps(SAMPLE);
        assert_eq!(maps.len(), 7);
        assert_eq!(maps[1].start, 0x55d0a00ff000);
        assert_eq!(maps[1].rss_kib, 3428);
        assert_eq!(maps[2].anonymous_kib, 132);
        let (chosen, skipped) = choose(&maps);
        let perms: Vec<&str> = chosen.iter().map(|m| m.perms.as_str()).collect();
        // The read-only data and the code; not RELRO (written by the loader), not the
        // writable data, the heap, the vDSO or an anonymous read-only mapping.
        assert_eq!(perms, ["r--p", "r-xp"]);
        assert_eq!(chosen[1].end, 0x55d0a05b8000);
        assert_eq!(skipped, 1);
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let maps = parse_smaps("nonsense\nRss: 12 kB\nzz-yy r-xp\n\n");
        assert!(maps.is_empty());
    }

    /// The test process's own code is released and keeps running: every function called
    /// after it faults its code back in.
    #[cfg(target_os = "linux")]
    #[test]
    fn released_code_runs_again() {
        let done = release().expect("release");
        assert!(done.mappings >= 1, "{done:?}");
        assert!(done.resident_kib > 0, "{done:?}");
        // Code and read-only data used after the release.
        let again = parse_smaps(SAMPLE);
        assert_eq!(again.len(), 7);
        let text = format!("{:?}", again[0]);
        assert!(text.contains("/usr/bin/leafd"));
    }
}
