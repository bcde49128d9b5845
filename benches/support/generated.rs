//! The generated manifest the manifest benchmarks parse (shared with
//! `examples/parse_manifest.rs`, the callgrind driver).

use std::fmt::Write;

/// A canonical manifest with `steps` consecutive steps of inline SQL.
pub fn generated_manifest(steps: usize) -> String {
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
