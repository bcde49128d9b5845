//! Parses and validates the benchmark's generated 10,000-step manifest a number of times:
//! a steady workload for counting instructions with callgrind, which is exact where wall
//! time on a shared machine is not
//! (`valgrind --tool=callgrind target/release/examples/parse_manifest [STEPS] [TIMES] [crlf]`;
//! `crlf` writes the line ends CRLF, which sends the manifest to the full XML reader).

use std::path::Path;

use upgrader::manifest::Manifest;

#[path = "../benches/support/generated.rs"]
mod generated;
use generated::generated_manifest;

fn main() {
    let mut args = std::env::args().skip(1);
    let steps = args
        .next()
        .map_or(10_000, |s| s.parse().expect("a step count"));
    let times = args
        .next()
        .map_or(20, |s| s.parse().expect("a repeat count"));
    let mut text = generated_manifest(steps);
    if args.next().as_deref() == Some("crlf") {
        text = text.replace('\n', "\r\n");
    }
    let mut total = 0;
    for _ in 0..times {
        let manifest = Manifest::parse(&text, Path::new("upgrade.xml"), None).expect("valid");
        total += manifest.steps.len();
    }
    println!("{total} steps parsed");
}
