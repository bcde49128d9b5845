//! Splits a script and prints how many statements it has and the longest one's length:
//! a way to measure the splitter's peak memory from outside
//! (`/usr/bin/time -v target/release/examples/split_rss FILE [stream|whole] [dialect]`).
//!
//! `stream` (the default) reads the file through `sql::Statements`; `whole` reads it into
//! a string first and calls `sql::split`, as callers holding the text do.

use std::fs::File;

use upgrader::sql::{split, Dialect, Statements};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: split_rss FILE [stream|whole] [sqlite|postgres|mysql]");
    let mode = args.next().unwrap_or_else(|| "stream".into());
    let dialect = match args.next().as_deref() {
        Some("sqlite") => Dialect::Sqlite,
        Some("postgres") => Dialect::Postgres,
        _ => Dialect::MySql,
    };
    let (mut count, mut longest) = (0usize, 0usize);
    let mut see = |text: &str| {
        count += 1;
        longest = longest.max(text.len());
    };
    if mode == "whole" {
        let text = std::fs::read_to_string(&path).expect("readable UTF-8 file");
        for statement in split(&text, dialect).expect("splittable") {
            see(&statement.text);
        }
    } else {
        for statement in Statements::new(File::open(&path).expect("readable file"), dialect) {
            see(&statement.expect("splittable").text);
        }
    }
    println!("{count} statements, the longest {longest} bytes");
}
