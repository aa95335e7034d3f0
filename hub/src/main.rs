//! `hubd`: the hub server. It serves the same NATS core, JetStream and leafnode links as
//! `leafd` (all from the `leaf-core` crate) and none of the gateway's parts (uplinks, serial
//! ports, Modbus, GPIO: its configuration refuses their keys, see [`config`]). Hub-only parts
//! (accounts administration, a JWT resolver, routes, Raft) will live in this crate, or in
//! `leaf-core` where both binaries need them, as they are built.
//!
//! * [`app`]: what the binary runs (flags, configuration, the server, reloads);
//! * [`config`]: its configuration: the shared keys only;
//! * [`fleet`]: the fleet view: the leaves' status records, `/fleetz`, `hubd fleet`.

mod app;
mod config;
mod fleet;
mod jsc;
mod monitor;
mod operator;
mod peers;
mod route;

/// hubd allocates with mimalloc: a hub stores every leaf's traffic, and with glibc's
/// allocator malloc and free took about a third of its CPU per stored message (see
/// BENCHMARKS.md, "Uplink replay"). leafd keeps the system allocator: mimalloc doubled its
/// idle RSS, and the leaf's budget is memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    disable_transparent_huge_pages();
    app::main()
}

/// mimalloc asks for transparent huge pages for its arenas, so every fresh 2 MiB of heap
/// cost a fault that zeroed the whole huge page: 13-19 % of hubd's CPU in the uplink replay
/// (store write buffers and the msg-id table come and go at that rate), and RSS in 2 MiB
/// steps. Small pages make both go away (see BENCHMARKS.md). This is the process flag that
/// `MIMALLOC_ALLOW_THP=0` sets; failing to set it only costs speed.
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        eprintln!(
            "hubd: cannot disable transparent huge pages: {}",
            std::io::Error::last_os_error()
        );
    }
}
