//! Code update packages for the tests: zips written from a list of entries, the
//! `update.xml` they carry, and a project at 1.0.0 with two chained packages pending
//! (shared by `updates.rs`, `launch.rs` and the crash target's install matrix).

use std::io::Write;
use std::path::Path;

use crate::util::TestProject;

pub(crate) const MANIFEST: &str = r#"<upgrade project="shop" initial-version="1.0.0">
  <install><sql>CREATE TABLE t (id INTEGER PRIMARY KEY);</sql></install>
</upgrade>
"#;

/// The manifest a 1.1.0 package carries: one more step.
pub(crate) const MANIFEST_1_1: &str = r#"<upgrade project="shop" initial-version="1.0.0">
  <install><sql>CREATE TABLE t (id INTEGER PRIMARY KEY);</sql></install>
  <step name="add-orders" from="1.0.0" to="1.1.0"><sql>CREATE TABLE orders (id INTEGER);</sql></step>
</upgrade>
"#;

/// An entry of a test zip: a regular file, or a symbolic link to a target.
pub(crate) enum Entry<'a> {
    File(&'a str, &'a str),
    Link(&'a str, &'a str),
}

pub(crate) fn write_zip(path: &Path, entries: &[Entry<'_>]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    // Stored: the tests' packages need no compression, and are made faster without.
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for entry in entries {
        match entry {
            Entry::File(name, text) => {
                zip.start_file(*name, options).unwrap();
                zip.write_all(text.as_bytes()).unwrap();
            }
            Entry::Link(name, target) => zip.add_symlink(*name, *target, options).unwrap(),
        }
    }
    zip.finish().unwrap();
}

pub(crate) fn update_xml(project: &str, version: &str, requires: &str) -> String {
    format!(
        "<update project=\"{project}\" version=\"{version}\" requires=\"{requires}\">\n  <notes>Version {version}</notes>\n</update>\n"
    )
}

pub(crate) const UPDATE_1_1: &str =
    "<update project=\"shop\" version=\"1.1.0\" requires=\"1.0.0\"><notes>n</notes></update>\n";

pub(crate) fn pending(project: &TestProject, name: &str) -> std::path::PathBuf {
    project.path().join("updates/Updates_Pending").join(name)
}

pub(crate) fn code_tree(project: &TestProject) -> std::collections::BTreeMap<String, Vec<u8>> {
    crate::util::file_tree(project.path())
        .into_iter()
        .filter(|(relative, _)| !relative.starts_with("updates/") && relative != "upgrade.lock")
        .collect()
}

pub(crate) fn files_in(project: &TestProject, folder: &str) -> Vec<String> {
    crate::util::names_in(&project.path().join("updates").join(folder))
}

pub(crate) const MANIFEST_1_2: &str = r#"<upgrade project="shop" initial-version="1.0.0">
  <install><sql>CREATE TABLE t (id INTEGER PRIMARY KEY);</sql></install>
  <step name="add-orders" from="1.0.0" to="1.1.0"><sql>CREATE TABLE orders (id INTEGER);</sql></step>
  <step name="add-docs" from="1.1.0" to="1.2.0"><sql>CREATE TABLE docs (id INTEGER);</sql></step>
</upgrade>
"#;

/// A project at 1.0.0 with a few files, and two chained packages pending.
pub(crate) fn project_with_two_packages() -> TestProject {
    let project = TestProject::new("1.0.0", MANIFEST);
    project.write("index.php", "v1");
    project.write("lib/old.php", "old");
    project.write("scripts/keep.sql", "SELECT 1;");
    project.run(&["--no-backup", "run"]).assert_code(0);
    write_zip(
        &pending(&project, "shop-1.1.0.zip"),
        &[
            Entry::File(
                "update.xml",
                "<update project=\"shop\" version=\"1.1.0\" requires=\"1.0.0\">\n  <notes>Orders</notes>\n  <remove path=\"lib/old.php\"/>\n</update>\n",
            ),
            Entry::File("files/VERSION", "1.1.0\n"),
            Entry::File("files/index.php", "v1.1"),
            Entry::File("files/lib/new.php", "new"),
            Entry::File("files/upgrade.xml", MANIFEST_1_1),
        ],
    );
    write_zip(
        &pending(&project, "shop-1.2.0.zip"),
        &[
            Entry::File("update.xml", &update_xml("shop", "1.2.0", "1.1.0")),
            Entry::File("files/docs/readme.txt", "docs"),
            Entry::File("files/upgrade.xml", MANIFEST_1_2),
        ],
    );
    project
}

/// What the two packages make of the project's files.
pub(crate) fn expected_new_tree(
    old: &std::collections::BTreeMap<String, Vec<u8>>,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut new = old.clone();
    new.remove("lib/old.php");
    new.insert("index.php".into(), b"v1.1".to_vec());
    new.insert("lib/new.php".into(), b"new".to_vec());
    new.insert("docs/readme.txt".into(), b"docs".to_vec());
    new.insert("upgrade.xml".into(), MANIFEST_1_2.as_bytes().to_vec());
    new.insert("VERSION".into(), b"1.2.0\n".to_vec());
    new
}
