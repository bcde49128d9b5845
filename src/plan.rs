//! The plan: which install, steps and version-only bumps take the database from its
//! version to the code's. A pure function of the manifest, the code version and what is
//! known about the database.

use serde::Serialize;

use crate::manifest::{Manifest, Pos};
use crate::version::Version;

/// What a plan item does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ItemKind {
    /// Run the `<install>` actions on an empty database.
    Install,
    /// Run a manifest step.
    Step,
    /// Only move the recorded version across a gap between steps.
    VersionOnly,
}

impl ItemKind {
    /// `install`, `step` or `version-only`.
    pub fn name(self) -> &'static str {
        match self {
            ItemKind::Install => "install",
            ItemKind::Step => "step",
            ItemKind::VersionOnly => "version-only",
        }
    }
}

/// One unit of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanItem {
    /// What it does.
    pub kind: ItemKind,
    /// The step name; `install` or `version-only` for the others.
    pub name: String,
    /// The version before (none for an install).
    pub from: Option<Version>,
    /// The version after.
    pub to: Version,
    /// Index into [`Manifest::steps`] for a step.
    pub step_index: Option<usize>,
}

/// What upgrader knows about the database before planning.
#[derive(Debug, Clone, Default)]
pub struct DbFacts {
    /// The recorded version of the project.
    pub version: Option<Version>,
    /// Whether any table other than upgrader's own exists.
    pub has_user_tables: bool,
}

/// The exact work a run would do; only [`plan`] makes one.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The recorded database version (none when never recorded).
    pub db_version: Option<Version>,
    /// Where the run starts: the recorded version, the initial version, or none for install.
    pub start: Option<Version>,
    /// The code version the run reaches.
    pub target: Version,
    /// The units, in order.
    pub items: Vec<PlanItem>,
}

impl Plan {
    /// A project already at `version`, with nothing to do: how [`interleave`] sees a
    /// project it has no plan for.
    pub fn settled(version: &Version) -> Plan {
        Plan {
            db_version: Some(version.clone()),
            start: Some(version.clone()),
            target: version.clone(),
            items: Vec::new(),
        }
    }

    /// Whether a run has anything to do (including recording a first version).
    pub fn is_needed(&self) -> bool {
        !self.items.is_empty() || self.db_version.is_none()
    }
}

/// Why no plan can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The database is ahead of the code.
    #[error("refusing to downgrade: the database is at {db} but the code (VERSION) is at {code}")]
    Downgrade {
        /// Recorded version.
        db: String,
        /// Code version.
        code: String,
    },
    /// `initial-version` is ahead of the code.
    #[error("initial-version {initial} in the manifest is above the code version {code}")]
    InitialAboveCode {
        /// The manifest's initial version.
        initial: String,
        /// Code version.
        code: String,
    },
    /// Neither install nor initial version applies.
    #[error("{0}")]
    NoStart(String),
    /// A step's range contains the start or the target, so it can neither run nor be skipped.
    #[error("{0}")]
    Straddle(Box<Straddle>),
}

/// A step whose range straddles the database or code version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{pos}: step '{step}' ({from} -> {to}) straddles {what} {version}; steps must start and end on versions the database can be at")]
pub struct Straddle {
    /// The manifest.
    pub file: String,
    /// The step's position.
    pub pos: Pos,
    /// The step.
    pub step: String,
    /// Its from version.
    pub from: String,
    /// Its to version.
    pub to: String,
    /// `the database version` or `the code version`.
    pub what: &'static str,
    /// That version.
    pub version: String,
}

/// Plans the run from the database facts to `code`.
pub fn plan(manifest: &Manifest, code: &Version, db: &DbFacts) -> Result<Plan, PlanError> {
    let start = match &db.version {
        Some(version) if version > code => {
            return Err(PlanError::Downgrade {
                db: version.to_string(),
                code: code.to_string(),
            })
        }
        Some(version) => Some(version.clone()),
        None if !db.has_user_tables && manifest.install.is_some() => {
            return Ok(Plan {
                db_version: None,
                start: None,
                target: code.clone(),
                items: vec![PlanItem {
                    kind: ItemKind::Install,
                    name: "install".into(),
                    from: None,
                    to: code.clone(),
                    step_index: None,
                }],
            });
        }
        None => match &manifest.initial_version {
            Some(initial) if initial > code => {
                return Err(PlanError::InitialAboveCode {
                    initial: initial.to_string(),
                    code: code.to_string(),
                })
            }
            Some(initial) => Some(initial.clone()),
            None => {
                let why = if db.has_user_tables {
                    "the database has tables but no version recorded by upgrader; add initial-version=\"X.Y.Z\" to <upgrade> in the manifest, naming the version this database is at"
                } else if manifest.steps.is_empty() {
                    "the database is empty and the manifest has neither <install> nor steps; add an <install> section, or initial-version=\"X.Y.Z\" to <upgrade>"
                } else {
                    "the database is empty and the manifest has no <install>; add an <install> section that creates the schema, or initial-version=\"X.Y.Z\" to <upgrade> to run the steps from there"
                };
                return Err(PlanError::NoStart(why.into()));
            }
        },
    };
    let start = start.expect("every other case returned");
    let mut items = Vec::new();
    let mut current = start.clone();
    for (index, step) in manifest.steps.iter().enumerate() {
        let straddles = |version: &Version| step.from < *version && *version < step.to;
        for (what, version) in [("the database version", &start), ("the code version", code)] {
            if straddles(version) {
                return Err(PlanError::Straddle(Box::new(Straddle {
                    file: manifest.path.display().to_string(),
                    pos: step.pos,
                    step: step.name.to_string(),
                    from: step.from.to_string(),
                    to: step.to.to_string(),
                    what,
                    version: version.to_string(),
                })));
            }
        }
        if step.from < start || step.to > *code {
            continue;
        }
        if step.from > current {
            items.push(version_only(&current, &step.from));
        }
        items.push(PlanItem {
            kind: ItemKind::Step,
            name: step.name.to_string(),
            from: Some(step.from.clone()),
            to: step.to.clone(),
            step_index: Some(index),
        });
        current = step.to.clone();
    }
    if current < *code {
        items.push(version_only(&current, code));
    }
    Ok(Plan {
        db_version: db.version.clone(),
        start: Some(start),
        target: code.clone(),
        items,
    })
}

/// What an item of a package's plan waits for: another package (by index) at a version.
pub type Wait = Option<(usize, Version)>;

/// Where interleaving stopped: every package with items left waits for another, round in
/// a circle. The chain starts at a waiting item and follows what each waits for, back to
/// where it started: `(package, item index)` pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    /// The items that wait for each other, each waiting for the next package's.
    pub chain: Vec<(usize, usize)>,
}

/// Orders the items of several packages' plans into one run: package 0 (the root) first,
/// then the others in order, each package's items in its own order, except that an item
/// that waits for package `q` at version `v` runs only once `q` has reached `v` (the
/// items of `q` up to there run first). `waits(p, item)` says what item `item` of
/// package `p` waits for. Returns `(package, item index)` in run order.
pub fn interleave(
    plans: &[&Plan],
    waits: &dyn Fn(usize, usize) -> Wait,
) -> Result<Vec<(usize, usize)>, Stuck> {
    // The version each package is at as the run goes; none before its install.
    let mut reached: Vec<Option<Version>> = plans
        .iter()
        .map(|plan| match plan.items.is_empty() {
            true => Some(plan.target.clone()),
            false => plan.start.clone(),
        })
        .collect();
    let mut next = vec![0usize; plans.len()];
    let total: usize = plans.iter().map(|plan| plan.items.len()).sum();
    let mut order = Vec::with_capacity(total);
    let ready =
        |reached: &[Option<Version>], package: usize, item: usize| match waits(package, item) {
            Some((other, version)) => reached[other].as_ref().is_some_and(|at| *at >= version),
            None => true,
        };
    while order.len() < total {
        let pick = (0..plans.len())
            .find(|&p| next[p] < plans[p].items.len() && ready(&reached, p, next[p]));
        let Some(package) = pick else {
            return Err(stuck(plans, &next, waits));
        };
        let item = next[package];
        reached[package] = Some(plans[package].items[item].to.clone());
        next[package] += 1;
        order.push((package, item));
    }
    Ok(order)
}

/// The circle of waits that stopped [`interleave`].
fn stuck(plans: &[&Plan], next: &[usize], waits: &dyn Fn(usize, usize) -> Wait) -> Stuck {
    let mut chain: Vec<(usize, usize)> = Vec::new();
    let mut package = (0..plans.len())
        .find(|&p| next[p] < plans[p].items.len())
        .expect("stuck with items left");
    loop {
        let at = (package, next[package]);
        if let Some(start) = chain.iter().position(|&seen| seen == at) {
            chain.drain(..start);
            return Stuck { chain };
        }
        chain.push(at);
        match waits(at.0, at.1) {
            // A package that has finished is at its target, which is at least any
            // version waited for (checked when the application is loaded); so what is
            // waited for has items left.
            Some((other, _)) if next[other] < plans[other].items.len() => package = other,
            _ => return Stuck { chain },
        }
    }
}

fn version_only(from: &Version, to: &Version) -> PlanItem {
    PlanItem {
        kind: ItemKind::VersionOnly,
        name: "version-only".into(),
        from: Some(from.clone()),
        to: to.clone(),
        step_index: None,
    }
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn manifest(body: &str) -> Manifest {
        let text = format!("<upgrade project=\"p\" {body}</upgrade>");
        Manifest::parse(&text, Path::new("upgrade.xml"), None).unwrap()
    }

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    fn facts(version: Option<&str>, tables: bool) -> DbFacts {
        DbFacts {
            version: version.map(v),
            has_user_tables: tables,
        }
    }

    fn summary(plan: &Plan) -> Vec<String> {
        plan.items
            .iter()
            .map(|item| {
                format!(
                    "{}:{}:{}",
                    item.name,
                    item.from.as_ref().map_or("-".into(), |f| f.to_string()),
                    item.to
                )
            })
            .collect()
    }

    const STEPS: &str = r#"initial-version="1.0.0">
        <step name="a" from="1.0.0" to="1.1.0"><sql>SELECT 1</sql></step>
        <step name="b" from="1.2.0" to="1.3.0"><sql>SELECT 1</sql></step>
        <step name="c" from="1.3.0" to="1.4.0"><sql>SELECT 1</sql></step>"#;

    #[test]
    fn current_is_empty() {
        let plan = plan(&manifest(STEPS), &v("1.3"), &facts(Some("1.3.0"), true)).unwrap();
        assert!(plan.items.is_empty());
        assert!(!plan.is_needed());
    }

    #[test]
    fn fills_gaps_and_tail() {
        let plan = plan(&manifest(STEPS), &v("1.5.0"), &facts(Some("1.0.0"), true)).unwrap();
        assert_eq!(
            summary(&plan),
            [
                "a:1.0.0:1.1.0",
                "version-only:1.1.0:1.2.0",
                "b:1.2.0:1.3.0",
                "c:1.3.0:1.4.0",
                "version-only:1.4.0:1.5.0"
            ]
        );
    }

    #[test]
    fn starts_midway_and_stops_at_code() {
        let plan = plan(&manifest(STEPS), &v("1.3.0"), &facts(Some("1.1.0"), true)).unwrap();
        assert_eq!(
            summary(&plan),
            ["version-only:1.1.0:1.2.0", "b:1.2.0:1.3.0"]
        );
    }

    #[test]
    fn downgrade_refused() {
        let error = plan(&manifest(STEPS), &v("1.1.0"), &facts(Some("1.3.0"), true)).unwrap_err();
        assert!(matches!(error, PlanError::Downgrade { .. }));
        assert!(error.to_string().contains("1.3.0"));
    }

    #[test]
    fn straddling_database_and_code() {
        let error = plan(&manifest(STEPS), &v("1.4.0"), &facts(Some("1.2.5"), true)).unwrap_err();
        assert!(error.to_string().contains("upgrade.xml:3:"), "{error}");
        assert!(
            error.to_string().contains("database version 1.2.5"),
            "{error}"
        );
        let error = plan(&manifest(STEPS), &v("1.3.5"), &facts(Some("1.0.0"), true)).unwrap_err();
        assert!(error.to_string().contains("code version 1.3.5"), "{error}");
    }

    #[test]
    fn install_on_empty_database() {
        let m = manifest(
            r#"initial-version="1.0.0"><install><sql>SELECT 1</sql></install>
            <step name="a" from="1.0.0" to="1.1.0"><sql>SELECT 1</sql></step>"#,
        );
        let plan = plan(&m, &v("1.1.0"), &facts(None, false)).unwrap();
        assert_eq!(summary(&plan), ["install:-:1.1.0"]);
        let adopt = super::plan(&m, &v("1.1.0"), &facts(None, true)).unwrap();
        assert_eq!(summary(&adopt), ["a:1.0.0:1.1.0"]);
    }

    #[test]
    fn initial_version_equal_to_code_records_only() {
        let plan = plan(&manifest(STEPS), &v("1.0.0"), &facts(None, true)).unwrap();
        assert!(plan.items.is_empty());
        assert!(plan.is_needed());
    }

    #[test]
    fn no_start_says_what_to_add() {
        let m = manifest(
            r#">
            <step name="a" from="1.0.0" to="1.1.0"><sql>SELECT 1</sql></step>"#,
        );
        let error = plan(&m, &v("1.1.0"), &facts(None, true)).unwrap_err();
        assert!(error.to_string().contains("add initial-version"), "{error}");
        let error = plan(&m, &v("1.1.0"), &facts(None, false)).unwrap_err();
        assert!(error.to_string().contains("<install>"), "{error}");
    }

    fn items(names: &[(&str, &str, &str)]) -> Plan {
        Plan {
            db_version: Some(v(names[0].1)),
            start: Some(v(names[0].1)),
            target: v(names[names.len() - 1].2),
            items: names
                .iter()
                .map(|(name, from, to)| PlanItem {
                    kind: ItemKind::Step,
                    name: name.to_string(),
                    from: Some(v(from)),
                    to: v(to),
                    step_index: None,
                })
                .collect(),
        }
    }

    fn names(plans: &[&Plan], order: &[(usize, usize)]) -> Vec<String> {
        order
            .iter()
            .map(|&(p, i)| plans[p].items[i].name.clone())
            .collect()
    }

    #[test]
    fn interleave_runs_root_first_then_packages_in_order() {
        let root = items(&[("r1", "1.0", "1.1"), ("r2", "1.1", "1.2")]);
        let blog = items(&[("b1", "1.0", "2.0")]);
        let pay = items(&[("p1", "0.1", "0.2")]);
        let plans = [&root, &blog, &pay];
        let order = interleave(&plans, &|_, _| None).unwrap();
        assert_eq!(names(&plans, &order), ["r1", "r2", "b1", "p1"]);
    }

    #[test]
    fn interleave_honours_after() {
        // r2 needs blog 2.0; blog's b2 needs the root at 1.1.
        let root = items(&[("r1", "1.0", "1.1"), ("r2", "1.1", "1.2")]);
        let blog = items(&[
            ("b1", "1.0", "1.5"),
            ("b2", "1.5", "2.0"),
            ("b3", "2.0", "3.0"),
        ]);
        let plans = [&root, &blog];
        let waits = |p: usize, i: usize| match (p, i) {
            (0, 1) => Some((1, v("2.0"))),
            (1, 1) => Some((0, v("1.1"))),
            _ => None,
        };
        let order = interleave(&plans, &waits).unwrap();
        assert_eq!(names(&plans, &order), ["r1", "b1", "b2", "r2", "b3"]);
    }

    #[test]
    fn interleave_is_satisfied_by_versions_already_reached() {
        let root = items(&[("r1", "1.0", "1.1")]);
        let blog = items(&[("b1", "2.0", "2.1")]);
        let plans = [&root, &blog];
        // The root waits for blog 2.0, which the database holds already.
        let order = interleave(&plans, &|p, _| (p == 0).then(|| (1, v("2.0")))).unwrap();
        assert_eq!(names(&plans, &order), ["r1", "b1"]);
    }

    #[test]
    fn interleave_finds_circles() {
        let root = items(&[("r1", "1.0", "1.1"), ("r2", "1.1", "1.2")]);
        let blog = items(&[("b1", "1.0", "2.0")]);
        let plans = [&root, &blog];
        // r2 waits for blog 2.0, b1 waits for the root at 1.2 (which r2 reaches).
        let waits = |p: usize, i: usize| match (p, i) {
            (0, 1) => Some((1, v("2.0"))),
            (1, 0) => Some((0, v("1.2"))),
            _ => None,
        };
        let stuck = interleave(&plans, &waits).unwrap_err();
        assert_eq!(stuck.chain, [(0, 1), (1, 0)]);
    }

    #[test]
    fn suffix_versions_order_steps() {
        let m = manifest(
            r#"initial-version="1.0.0-BETA9">
            <step name="b10" from="1.0.0-BETA10" to="1.0.0-RC1"><sql>SELECT 1</sql></step>
            <step name="b9" from="1.0.0-BETA9" to="1.0.0-BETA10"><sql>SELECT 1</sql></step>"#,
        );
        let plan = plan(&m, &v("1.0.0"), &facts(None, true)).unwrap();
        assert_eq!(
            summary(&plan),
            [
                "b9:1.0.0-BETA9:1.0.0-BETA10",
                "b10:1.0.0-BETA10:1.0.0-RC1",
                "version-only:1.0.0-RC1:1.0.0"
            ]
        );
    }
}
