//! The `retalk` command line.

fn main() {
    eprintln!("retalk: the command line is not built yet");
    std::process::exit(2);
}
