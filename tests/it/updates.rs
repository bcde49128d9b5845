//! Code update packages in `updates/Updates_Pending/`: `updates list` reads each zip's
//! directory and update.xml (never extracting), computes the database steps a package
//! brings, and names what keeps a package from being installed; `status` and `check`
//! report the installable ones (exit 6).

use std::io::Write;
use std::path::Path;

use sha2::Digest;

use crate::util::TestProject;

const MANIFEST: &str = r#"<upgrade project="shop" initial-version="1.0.0">
  <install><sql>CREATE TABLE t (id INTEGER PRIMARY KEY);</sql></install>
</upgrade>
"#;

/// The manifest a 1.1.0 package carries: one more step.
const MANIFEST_1_1: &str = r#"<upgrade project="shop" initial-version="1.0.0">
  <install><sql>CREATE TABLE t (id INTEGER PRIMARY KEY);</sql></install>
  <step name="add-orders" from="1.0.0" to="1.1.0"><sql>CREATE TABLE orders (id INTEGER);</sql></step>
</upgrade>
"#;

/// An entry of a test zip: a regular file, or a symbolic link to a target.
enum Entry<'a> {
    File(&'a str, &'a str),
    Link(&'a str, &'a str),
}

fn write_zip(path: &Path, entries: &[Entry<'_>]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default();
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

fn update_xml(project: &str, version: &str, requires: &str) -> String {
    format!(
        "<update project=\"{project}\" version=\"{version}\" requires=\"{requires}\">\n  <notes>Version {version}</notes>\n</update>\n"
    )
}

fn pending(project: &TestProject, name: &str) -> std::path::PathBuf {
    project.path().join("updates/Updates_Pending").join(name)
}

/// Every file under the project and its content: equal trees mean nothing was extracted,
/// moved or written.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else if path.file_name().unwrap() != "upgrader.db" {
                files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn list_shows_packages_in_version_order_with_their_steps_and_problems() {
    let project = TestProject::new("1.0.0", MANIFEST);
    project.run(&["--no-backup", "run"]).assert_code(0);
    // Named so that file order differs from version order.
    write_zip(
        &pending(&project, "b-shop-1.1.0.zip"),
        &[
            Entry::File("update.xml", &update_xml("shop", "1.1.0", "1.0.0")),
            Entry::File("files/VERSION", "1.1.0\n"),
            Entry::File("files/upgrade.xml", MANIFEST_1_1),
        ],
    );
    write_zip(
        &pending(&project, "a-shop-1.2.0.zip"),
        &[Entry::File(
            "update.xml",
            &update_xml("shop", "1.2.0", "1.1.0"),
        )],
    );
    write_zip(
        &pending(&project, "other.zip"),
        &[Entry::File(
            "update.xml",
            &update_xml("blog", "2.0.0", "1.0.0"),
        )],
    );
    write_zip(
        &pending(&project, "old.zip"),
        &[Entry::File(
            "update.xml",
            &update_xml("shop", "1.0.0", "0.9.0"),
        )],
    );
    write_zip(
        &pending(&project, "slip.zip"),
        &[
            Entry::File("update.xml", &update_xml("shop", "1.3.0", "1.0.0")),
            Entry::File("files/../../evil.txt", "x"),
        ],
    );
    write_zip(
        &pending(&project, "link.zip"),
        &[
            Entry::File("update.xml", &update_xml("shop", "1.3.0", "1.0.0")),
            Entry::Link("files/config.php", "/etc/passwd"),
        ],
    );
    write_zip(
        &pending(&project, "badxml.zip"),
        &[Entry::File(
            "update.xml",
            "<update project=\"shop\" version=\"1.3.0\">\n  <note>typo</note>\n</update>\n",
        )],
    );
    // A zip still being copied: its first half.
    let whole = std::fs::read(pending(&project, "b-shop-1.1.0.zip")).unwrap();
    std::fs::write(pending(&project, "copying.zip"), &whole[..whole.len() / 2]).unwrap();
    // Not packages: a download in progress and a signature.
    project.write("updates/Updates_Pending/.next.zip.part", "partial");
    project.write("updates/Updates_Pending/b-shop-1.1.0.zip.minisig", "sig");
    let before = tree(project.path());

    let listed = project.run(&["updates", "list", "--json"]);
    listed.assert_code(0);
    let listed = listed.json();
    let packages = listed.as_array().unwrap();
    let files: Vec<&str> = packages
        .iter()
        .map(|p| p["file"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "old.zip",
            "b-shop-1.1.0.zip",
            "a-shop-1.2.0.zip",
            "other.zip",
            "badxml.zip",
            "copying.zip",
            "link.zip",
            "slip.zip"
        ],
        "version order, then the unreadable ones by name"
    );
    let by_name = |name: &str| packages.iter().find(|p| p["file"] == name).unwrap();
    let first = by_name("b-shop-1.1.0.zip");
    assert_eq!(first["project"], "shop");
    assert_eq!(first["version"], "1.1.0");
    assert_eq!(first["requires"], "1.0.0");
    assert_eq!(first["notes"], "Version 1.1.0");
    assert_eq!(first["signed"], false);
    assert_eq!(first["problems"].as_array().unwrap().len(), 0, "{first}");
    let digest: String = sha2::Sha256::digest(&whole)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(first["sha256"], digest.as_str());
    let steps = first["database_steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{first}");
    assert_eq!(steps[0]["name"], "add-orders");
    assert_eq!(steps[0]["from"], "1.0.0");
    assert_eq!(steps[0]["to"], "1.1.0");
    // Requires 1.1.0, installed is 1.0.0.
    let second = by_name("a-shop-1.2.0.zip");
    assert!(second["problems"][0]
        .as_str()
        .unwrap()
        .contains("requires version 1.1.0"));
    let problem = |name: &str| by_name(name)["problems"][0].as_str().unwrap().to_string();
    assert!(
        problem("other.zip").contains("for project blog"),
        "{}",
        problem("other.zip")
    );
    assert!(
        problem("old.zip").contains("not newer"),
        "{}",
        problem("old.zip")
    );
    assert!(
        problem("slip.zip").contains("files/../../evil.txt"),
        "{}",
        problem("slip.zip")
    );
    assert!(
        problem("link.zip").contains("symbolic link"),
        "{}",
        problem("link.zip")
    );
    let badxml = problem("badxml.zip");
    assert!(
        badxml.contains("badxml.zip!update.xml:2:3") && badxml.contains("<note>"),
        "{badxml}"
    );
    assert_eq!(by_name("copying.zip")["incomplete"], true);
    assert_eq!(by_name("b-shop-1.1.0.zip")["incomplete"], false);

    let human = project.run(&["updates", "list"]);
    human
        .assert_code(0)
        .assert_stdout("b-shop-1.1.0.zip: version 1.1.0 (installable)")
        .assert_stdout("add-orders 1.0.0 -> 1.1.0")
        .assert_stdout("copying.zip: version ? (incomplete)");
    assert_eq!(
        tree(project.path()),
        before,
        "listing extracted or changed nothing"
    );

    // status lists the installable one; check exits 6 (the database is current).
    let status = project.run(&["status", "--json"]).json();
    assert_eq!(
        status["updates_pending"],
        serde_json::json!(["b-shop-1.1.0.zip"])
    );
    project
        .run(&["check"])
        .assert_code(6)
        .assert_stdout("b-shop-1.1.0.zip");
    // A database upgrade pending goes first: 3.
    project.write("upgrade.xml", MANIFEST_1_1);
    project.write("VERSION", "1.1.0\n");
    project.run(&["check"]).assert_code(3);
}

#[test]
fn without_packages_nothing_is_pending() {
    let project = TestProject::new("1.0.0", MANIFEST);
    project.run(&["--no-backup", "run"]).assert_code(0);
    project
        .run(&["updates", "list"])
        .assert_code(0)
        .assert_stdout("no update packages");
    assert_eq!(
        project.run(&["updates", "list", "--json"]).json(),
        serde_json::json!([])
    );
    project.run(&["check"]).assert_code(0);
    // A trusted key and no way to check signatures yet: nothing is installable.
    write_zip(
        &pending(&project, "shop-1.1.0.zip"),
        &[Entry::File(
            "update.xml",
            &update_xml("shop", "1.1.0", "1.0.0"),
        )],
    );
    project.run(&["check"]).assert_code(6);
    project.write("updates/trusted.pub", "untrusted comment: key\nRWQ...\n");
    project.run(&["check"]).assert_code(0);
    let listed = project.run(&["updates", "list", "--json"]).json();
    assert!(listed[0]["problems"][0]
        .as_str()
        .unwrap()
        .contains("trusted.pub"));
}
