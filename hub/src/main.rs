//! `hubd`: the hub server. It serves the same NATS core, JetStream and leafnode link as
//! `leafd` (all from the `leaf` library); hub-only parts (monitoring for many leaves, the
//! full JetStream API with consumers, KV and object store) will live in this crate as they
//! are built.

fn main() -> std::process::ExitCode {
    leaf::app::main(leaf::app::Flavor::Hubd)
}
