//! The `ringmq` command.

fn main() {
    println!(
        "ringmq {} (batch format v{})",
        env!("CARGO_PKG_VERSION"),
        ringmq::format::FORMAT_VERSION
    );
}
