//! `hubd`: the hub server. It serves the same NATS core, JetStream and leafnode link as
//! `leafd` (all from the `leaf` library); hub-only parts (monitoring for many leaves, the
//! full JetStream API with consumers, KV and object store) will live in this crate as they
//! are built.

/// hubd allocates with mimalloc: a hub stores every leaf's traffic, and with glibc's
/// allocator malloc and free took about a third of its CPU per stored message (see
/// BENCHMARKS.md, "Uplink replay"). leafd keeps the system allocator: mimalloc doubled its
/// idle RSS, and the leaf's budget is memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    leaf::app::main(leaf::app::Flavor::Hubd)
}
