//! Code update packages in `updates/Updates_Pending/`: `updates list` reads each zip's
//! directory and update.xml (never extracting), computes the database steps a package
//! brings, and names what keeps a package from being installed; `status` and `check`
//! report the installable ones (exit 6).

use std::io::Write;

use sha2::Digest;

use crate::update_packages::*;
use crate::util::TestProject;

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
    let before = crate::util::file_tree(project.path());

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
    // Requires 1.1.0, which the package before it installs.
    let second = by_name("a-shop-1.2.0.zip");
    assert_eq!(second["problems"], serde_json::json!([]), "{second}");
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
        crate::util::file_tree(project.path()),
        before,
        "listing extracted or changed nothing"
    );

    // status lists the installable one; check exits 6 (the database is current).
    let status = project.run(&["status", "--json"]).json();
    assert_eq!(
        status["updates_pending"],
        serde_json::json!(["b-shop-1.1.0.zip", "a-shop-1.2.0.zip"])
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
    // A trusted key that cannot be read: nothing is installable (never unsigned).
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

/// The project's own files (not upgrader's: updates/, the lock, the database) and their
/// contents.
/// Two chained packages install in version order into exactly the expected tree; the app
/// backup holds the old tree; Pending is empty and Installed holds both, stamped; the
/// database upgrade is then pending and `run` applies the packages' steps; `rollback`
/// brings the old tree back exactly and names the database backup of that version.
#[test]
fn two_chained_packages_install_then_roll_back() {
    let project = project_with_two_packages();
    let old = code_tree(&project);
    let installed = project.run(&["updates", "install", "--json"]);
    installed.assert_code(0);
    let installed = installed.json();
    assert_eq!(installed["from"], "1.0.0");
    assert_eq!(installed["to"], "1.2.0");
    assert_eq!(installed["packages"][0]["file"], "shop-1.1.0.zip");
    assert_eq!(installed["packages"][1]["file"], "shop-1.2.0.zip");
    assert_eq!(code_tree(&project), expected_new_tree(&old));
    assert!(!project.path().join("lib/old.php").exists());
    assert!(files_in(&project, "Updates_Pending").is_empty());
    let kept = files_in(&project, "Updates_Installed");
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(
        kept[0].starts_with("shop-1.1.0-") && kept[0].ends_with("Z.zip"),
        "{kept:?}"
    );
    assert!(kept[1].starts_with("shop-1.2.0-"), "{kept:?}");
    assert!(!project.lock_path().exists());
    assert!(!project.path().join("updates/.install").exists());
    // The backup zip is the old tree.
    let backup = installed["backup"].as_str().unwrap();
    assert!(backup.starts_with("app-shop-1.0.0-"), "{backup}");
    let mut zip = zip::ZipArchive::new(
        std::fs::File::open(project.path().join("updates/Updates_Backups").join(backup)).unwrap(),
    )
    .unwrap();
    let mut in_backup = std::collections::BTreeMap::new();
    for index in 0..zip.len() {
        let mut entry = zip.by_index(index).unwrap();
        if entry.is_file() {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            in_backup.insert(entry.name().unwrap().to_string(), bytes);
        }
    }
    assert_eq!(in_backup, old);
    // The code is ahead of the database now.
    project.run(&["check"]).assert_code(3);
    project.run(&["run"]).assert_code(0);
    assert_eq!(project.version_of("shop").as_deref(), Some("1.2.0"));
    assert_eq!(project.query_i64("SELECT count(*) FROM docs"), 0);
    project.run(&["check"]).assert_code(0);
    // Back to the old tree; the database backup the run made is the one to restore.
    let rolled = project.run(&["updates", "rollback", "--json"]);
    rolled.assert_code(0);
    let rolled = rolled.json();
    assert_eq!(rolled["version"], "1.0.0");
    let database_backup = rolled["database_backup"].as_str().unwrap();
    assert!(
        database_backup.starts_with("db-shop-1.0.0-"),
        "{database_backup}"
    );
    assert_eq!(code_tree(&project), old);
    assert!(
        !project.path().join("docs").exists(),
        "a directory the package made is gone"
    );
    project
        .run(&["restore", database_backup, "--yes"])
        .assert_code(0);
    assert_eq!(project.version_of("shop").as_deref(), Some("1.0.0"));
    project.run(&["check"]).assert_code(0);
}

/// Packages that must not be installed: refused with the package and the reason named;
/// nothing changed in the tree, the package still pending, no lock and no work left.
#[test]
fn refused_packages_change_nothing() {
    let project = TestProject::new("1.0.0", MANIFEST);
    project.write("index.php", "v1");
    project.run(&["--no-backup", "run"]).assert_code(0);
    let old = code_tree(&project);
    let check = |file: &str, needle: &str| {
        project
            .run(&["updates", "install", file])
            .assert_code(1)
            .assert_stderr(file)
            .assert_stderr(needle);
        assert_eq!(code_tree(&project), old, "{file}");
        assert!(pending(&project, file).exists(), "{file} is still pending");
        assert!(!project.lock_path().exists(), "{file}");
        assert!(!project.path().join("updates/.install").exists(), "{file}");
        assert!(files_in(&project, "Updates_Backups").is_empty(), "{file}");
    };
    write_zip(
        &pending(&project, "slip.zip"),
        &[
            Entry::File("update.xml", &update_xml("shop", "1.1.0", "1.0.0")),
            Entry::File("files/../evil.php", "x"),
        ],
    );
    check("slip.zip", "files/../evil.php");
    write_zip(
        &pending(&project, "lock.zip"),
        &[
            Entry::File("update.xml", &update_xml("shop", "1.1.0", "1.0.0")),
            Entry::File("files/upgrade.lock", "{}"),
        ],
    );
    check("lock.zip", "upgrade.lock");
    write_zip(
        &pending(&project, "twice.zip"),
        &[
            Entry::File("update.xml", &update_xml("shop", "1.1.0", "1.0.0")),
            Entry::File("files/Index.php", "a"),
            Entry::File("files/index.php", "b"),
        ],
    );
    check("twice.zip", "differ only in case");
    write_zip(
        &pending(&project, "version.zip"),
        &[
            Entry::File("update.xml", &update_xml("shop", "1.1.0", "1.0.0")),
            Entry::File("files/VERSION", "1.3.0\n"),
        ],
    );
    check("version.zip", "files/VERSION says 1.3.0");
    write_zip(
        &pending(&project, "other.zip"),
        &[Entry::File(
            "update.xml",
            &update_xml("blog", "1.1.0", "1.0.0"),
        )],
    );
    check("other.zip", "for project blog");
    let simple = |name: &str, entries: &[Entry<'_>]| {
        let mut all = vec![Entry::File("update.xml", UPDATE_1_1)];
        all.extend(entries.iter().map(|e| match e {
            Entry::File(n, t) => Entry::File(n, t),
            Entry::Link(n, t) => Entry::Link(n, t),
        }));
        write_zip(&pending(&project, name), &all);
    };
    simple("absolute.zip", &[Entry::File("/etc/evil.php", "x")]);
    check("absolute.zip", "absolute paths");
    simple("backslash.zip", &[Entry::File("files\\..\\evil.php", "x")]);
    check("backslash.zip", "backslashes");
    simple("drive.zip", &[Entry::File("C:/evil.php", "x")]);
    check("drive.zip", "drive letters");
    simple(
        "updates.zip",
        &[Entry::File("files/updates/trusted.pub", "x")],
    );
    check("updates.zip", "into updates/");
    simple(
        "link.zip",
        &[Entry::Link("files/config.php", "/etc/passwd")],
    );
    check("link.zip", "symbolic links");
    simple("outside.zip", &[Entry::File("elsewhere/evil.php", "x")]);
    check("outside.zip", "only update.xml and files/");
    write_zip(
        &pending(&project, "old.zip"),
        &[Entry::File(
            "update.xml",
            &update_xml("shop", "1.0.0", "0.9.0"),
        )],
    );
    check("old.zip", "not newer");
    write_zip(
        &pending(&project, "requires.zip"),
        &[Entry::File(
            "update.xml",
            &update_xml("shop", "1.3.0", "1.2.0"),
        )],
    );
    check("requires.zip", "requires version 1.2.0");
    write_zip(
        &pending(&project, "noxml.zip"),
        &[Entry::File("files/a.php", "x")],
    );
    check("noxml.zip", "no update.xml");
    write_zip(
        &pending(&project, "badxml.zip"),
        &[Entry::File(
            "update.xml",
            "<update project=\"shop\" version=\"1.1.0\">\n  <remove/>\n</update>\n",
        )],
    );
    check("badxml.zip", "badxml.zip!update.xml:2:3");
    // Half copied.
    simple("whole.zip", &[Entry::File("files/a.php", "x")]);
    let whole = std::fs::read(pending(&project, "whole.zip")).unwrap();
    std::fs::remove_file(pending(&project, "whole.zip")).unwrap();
    std::fs::write(pending(&project, "half.zip"), &whole[..whole.len() / 2]).unwrap();
    check("half.zip", "not a complete zip");
    // Encrypted, and a device: flags the zip writer here cannot set, set in the bytes
    // of the central directory (general purpose bit 0; the file type in the external
    // attributes' high half).
    let patched = |name: &str, patch: &dyn Fn(&mut Vec<u8>, usize)| {
        simple(name, &[Entry::File("files/a.php", "x")]);
        let path = pending(&project, name);
        let mut bytes = std::fs::read(&path).unwrap();
        let central = bytes.windows(4).rposition(|w| w == b"PK\x01\x02").unwrap();
        patch(&mut bytes, central);
        std::fs::write(&path, bytes).unwrap();
    };
    patched("encrypted.zip", &|bytes, at| bytes[at + 8] |= 1);
    check("encrypted.zip", "encrypted");
    patched("device.zip", &|bytes, at| {
        bytes[at + 5] = 3; // made on Unix
        let mode: u32 = 0o020644; // a character device
        bytes[at + 38..at + 42].copy_from_slice(&(mode << 16).to_le_bytes());
    });
    check("device.zip", "device");
    // A zip bomb: 64 MiB of zeros in a few KiB, caught while extracting.
    {
        let path = pending(&project, "bomb.zip");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("update.xml", options).unwrap();
        zip.write_all(update_xml("shop", "1.1.0", "1.0.0").as_bytes())
            .unwrap();
        zip.start_file("files/zeros.bin", options).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            zip.write_all(&zeros).unwrap();
        }
        zip.finish().unwrap();
    }
    check("bomb.zip", "zip bomb");
    // A bad CRC: one byte of stored data changed.
    {
        let path = pending(&project, "crc.zip");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("update.xml", stored).unwrap();
        zip.write_all(update_xml("shop", "1.1.0", "1.0.0").as_bytes())
            .unwrap();
        zip.start_file("files/data.txt", stored).unwrap();
        zip.write_all(b"0123456789-the-content-MARKER-0123456789")
            .unwrap();
        zip.finish().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.windows(6).position(|w| w == b"MARKER").unwrap();
        bytes[at] = b'X';
        std::fs::write(&path, bytes).unwrap();
    }
    check("crc.zip", "crc.zip");
    // Not a package of the folder.
    project
        .run(&["updates", "install", "missing.zip"])
        .assert_code(1)
        .assert_stderr("missing.zip is not a package");
    assert_eq!(code_tree(&project), old);
}

/// SIGKILL at many moments of a 2,000-file install (staging, backup, the moves,
/// finishing): after the next command the tree is exactly the old one or exactly the new
/// one, every time, and installing again completes.
#[test]
fn an_install_of_2000_files_killed_at_many_moments() {
    let template = TestProject::new("1.0.0", MANIFEST);
    template.run(&["--no-backup", "run"]).assert_code(0);
    for index in 0..1000 {
        template.write(
            &format!("app/part{}/file{index}.php", index % 10),
            &format!("old {index}"),
        );
    }
    let mut entries: Vec<(String, String)> =
        vec![("update.xml".into(), update_xml("shop", "1.1.0", "1.0.0"))];
    for index in 0..2000 {
        entries.push((
            format!("files/app/part{}/file{index}.php", index % 10),
            format!("new {index} {}", "x".repeat(index % 300)),
        ));
    }
    let package: Vec<Entry<'_>> = entries
        .iter()
        .map(|(name, text)| Entry::File(name, text))
        .collect();
    let fresh = || {
        let project = TestProject::new("1.0.0", MANIFEST);
        std::fs::copy(template.db_path(), project.db_path()).unwrap();
        for index in 0..1000 {
            project.write(
                &format!("app/part{}/file{index}.php", index % 10),
                &format!("old {index}"),
            );
        }
        write_zip(&pending(&project, "shop-1.1.0.zip"), &package);
        project
    };
    // Killed at moments chosen from its journal: while staging, after it, after the
    // backup, at several points of the moves, and once they are all made.
    let moments: [(&str, u64); 6] = [
        ("", 20),
        ("staged", 0),
        ("backed up", 0),
        ("applying", 2),
        ("applying", 20),
        ("applied", 0),
    ];
    let mut outcomes = (0, 0);
    for (line, extra_ms) in moments {
        let project = fresh();
        let old = code_tree(&project);
        let mut child = project
            .command(&["updates", "install"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let journal = project.path().join("updates/.install/journal");
        let waited = std::time::Instant::now();
        while child.try_wait().unwrap().is_none()
            && !std::fs::read_to_string(&journal).is_ok_and(|text| {
                text.lines().any(|l| {
                    l.split_once(' ')
                        .is_some_and(|(_, rest)| rest.starts_with(line))
                })
            })
            && waited.elapsed() < std::time::Duration::from_secs(60)
        {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        std::thread::sleep(std::time::Duration::from_millis(extra_ms));
        let delay_ms = format!("{line:?} + {extra_ms}");
        let _ = child.kill();
        let status = child.wait().unwrap();
        project.run(&["status"]).assert_code(0);
        let after = code_tree(&project);
        let new_version = after.get("VERSION").map(Vec::as_slice) == Some(b"1.1.0\n".as_slice());
        if new_version {
            outcomes.1 += 1;
            assert_eq!(
                after.len(),
                old.len() + 1000,
                "killed at {delay_ms} ms ({status})"
            );
            assert!(files_in(&project, "Updates_Pending").is_empty());
        } else {
            outcomes.0 += 1;
            assert_eq!(
                after, old,
                "killed at {delay_ms} ms ({status}): not the old tree"
            );
            project.run(&["updates", "install"]).assert_code(0);
        }
        let done = code_tree(&project);
        assert_eq!(
            done.get("app/part7/file1997.php").map(Vec::as_slice),
            Some(format!("new 1997 {}", "x".repeat(1997 % 300)).as_bytes())
        );
        assert_eq!(
            done.get("app/part0/file0.php").map(Vec::as_slice),
            Some(b"new 0 ".as_slice())
        );
        assert!(!project.lock_path().exists());
        assert!(!project.path().join("updates/.install").exists());
    }
    eprintln!(
        "old tree {} times, new tree {} times",
        outcomes.0, outcomes.1
    );
}
