//! `leafd`: the gateway server. See the crate documentation of `leaf`.

fn main() -> std::process::ExitCode {
    leaf::app::main(leaf::app::Flavor::Leafd)
}
