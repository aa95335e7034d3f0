//! `hubd`: the hub server. It serves the same NATS core as `leafd` (from the `leaf` library);
//! the hub-specific parts (the accept side of leafnode links, the full JetStream API) will live
//! in this crate.

fn main() -> std::process::ExitCode {
    leaf::app::main(leaf::app::Flavor::Hubd)
}
