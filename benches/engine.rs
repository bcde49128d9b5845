//! Criterion benchmarks of the hot library paths: manifest parsing and validation,
//! planning, version ordering and statement splitting (whole and streamed).

use std::fmt::Write;
use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use upgrader::manifest::Manifest;
use upgrader::plan::{plan, DbFacts};
use upgrader::sql::{split, Dialect, Statements};
use upgrader::Version;

#[path = "support/generated.rs"]
mod generated;
use generated::generated_manifest;

fn manifest(c: &mut Criterion) {
    let text = generated_manifest(10_000);
    c.bench_function("parse and validate a 10,000-step manifest", |b| {
        b.iter(|| Manifest::parse(black_box(&text), Path::new("upgrade.xml"), None).unwrap())
    });
    // Line ends written CRLF send the manifest to the full XML reader (the plain one
    // leaves line-end normalization to it): the cost of the slower path.
    let crlf = text.replace('\n', "\r\n");
    c.bench_function(
        "parse and validate a 10,000-step manifest (CRLF, full XML reader)",
        |b| b.iter(|| Manifest::parse(black_box(&crlf), Path::new("upgrade.xml"), None).unwrap()),
    );
    let parsed = Manifest::parse(&text, Path::new("upgrade.xml"), None).unwrap();
    let code = Version::parse("1.10000.0").unwrap();
    let facts = DbFacts {
        version: Some(Version::parse("1.0.0").unwrap()),
        has_user_tables: true,
    };
    c.bench_function("plan 10,000 steps", |b| {
        b.iter(|| plan(black_box(&parsed), &code, &facts).unwrap())
    });
}

fn versions(c: &mut Criterion) {
    c.bench_function("parse and compare two versions", |b| {
        b.iter(|| {
            let a = Version::parse(black_box("1.4.0-BETA10")).unwrap();
            let b = Version::parse(black_box("1.4.0-RC1")).unwrap();
            a < b
        })
    });
}

fn statements(c: &mut Criterion) {
    let mut script = String::new();
    for index in 0..1_000 {
        let _ = writeln!(
            script,
            "INSERT INTO t (n, s) VALUES ({index}, 'text; with a semicolon'); -- comment {index}"
        );
    }
    c.bench_function("split a 1,000-statement script", |b| {
        b.iter(|| split(black_box(&script), Dialect::Sqlite).unwrap())
    });
    c.bench_function("split a 1,000-statement script (MySQL)", |b| {
        b.iter(|| split(black_box(&script), Dialect::MySql).unwrap())
    });
    c.bench_function("stream a 1,000-statement script from a reader", |b| {
        b.iter(|| {
            Statements::new(black_box(script.as_bytes()), Dialect::Sqlite)
                .map(|statement| statement.unwrap().text.len())
                .sum::<usize>()
        })
    });
}

/// The web gate's answer once the database is current: the cost every request pays.
fn gate(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("VERSION"), "1.0.0\n").unwrap();
    std::fs::write(
        dir.path().join("upgrade.xml"),
        "<upgrade project=\"bench\"><install><sql>CREATE TABLE t (x INTEGER);</sql></install></upgrade>\n",
    )
    .unwrap();
    upgrader::Engine::open(upgrader::Config::new(dir.path()))
        .unwrap()
        .run()
        .unwrap();
    let gate = upgrader::gate::Gate::new(dir.path(), None, Default::default());
    let start = std::time::Instant::now();
    while gate.check() != upgrader::gate::Answer::Ready {
        assert!(start.elapsed().as_secs() < 30, "the gate did not open");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    c.bench_function("gate answer when current", |b| {
        b.iter(|| black_box(&gate).check())
    });
}

criterion_group!(benches, manifest, versions, statements, gate);
criterion_main!(benches);
