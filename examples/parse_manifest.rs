//! Parses and validates the benchmark's generated 10,000-step manifest a number of times:
//! a steady workload for counting instructions with callgrind, which is exact where wall
//! time on a shared machine is not
//! (`valgrind --tool=callgrind target/release/examples/parse_manifest [STEPS] [TIMES] [crlf]`;
//! `crlf` writes the line ends CRLF, which sends the manifest to the full XML reader).

use std::fmt::Write;
use std::path::Path;

use upgrader::manifest::Manifest;

/// The same manifest as `benches/engine.rs` generates.
fn generated_manifest(steps: usize) -> String {
    let mut text = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<upgrade project=\"bench\" initial-version=\"1.0.0\">\n");
    for index in 0..steps {
        let _ = writeln!(
            text,
            "  <step name=\"step-{index}\" from=\"1.{index}.0\" to=\"1.{}.0\">\n    <description>Step {index}</description>\n    <sql>INSERT INTO t (n) VALUES ({index});</sql>\n  </step>",
            index + 1
        );
    }
    text.push_str("</upgrade>\n");
    text
}

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
