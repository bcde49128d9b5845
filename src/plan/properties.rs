//! Property tests of the planner: random manifests (ranges with gaps, written in any
//! order, versions with and without suffixes) and random database and code versions,
//! checked against what DESIGN.md's "The plan" says, item by item; and of `interleave`,
//! random plans of several packages with random waits.

use std::path::Path;

use proptest::prelude::*;

use super::*;

/// Versions the generated manifests draw from, in their true order (sorted by
/// `Version`'s own ordering, so the suffix rules are exercised, not assumed).
fn universe() -> Vec<Version> {
    let mut versions: Vec<Version> = (0..6)
        .flat_map(|minor| {
            ["-ALPHA1", "-BETA2", "-BETA10", "-RC1", ""]
                .into_iter()
                .map(move |suffix| Version::parse(&format!("1.{minor}.0{suffix}")).unwrap())
        })
        .collect();
    versions.sort();
    versions.dedup();
    versions
}

/// One generated case: indexes into [`universe`].
#[derive(Debug, Clone)]
struct Case {
    /// Steps as (from, to) indexes: disjoint ranges, possibly with gaps between them.
    steps: Vec<(usize, usize)>,
    /// The order in which the steps are written in the manifest.
    written: Vec<usize>,
    install: bool,
    initial: Option<usize>,
    db: Option<usize>,
    code: usize,
    has_user_tables: bool,
}

fn case() -> impl Strategy<Value = Case> {
    let size = universe().len();
    (
        // Cut points: each consecutive pair of points is a step or a gap.
        proptest::collection::btree_set(0..size, 0..12),
        proptest::collection::vec(any::<bool>(), 12),
        any::<bool>(),
        proptest::option::of(0..size),
        proptest::option::of(0..size),
        0..size,
        any::<bool>(),
    )
        .prop_flat_map(
            move |(points, is_step, install, initial, db, code, has_user_tables)| {
                let points: Vec<usize> = points.into_iter().collect();
                let steps: Vec<(usize, usize)> = points
                    .windows(2)
                    .zip(&is_step)
                    .filter(|(_, &step)| step)
                    .map(|(pair, _)| (pair[0], pair[1]))
                    .collect();
                let order: Vec<usize> = (0..steps.len()).collect();
                (
                    Just(steps),
                    Just(order).prop_shuffle(),
                    Just(install),
                    Just(initial),
                    Just(db),
                    Just(code),
                    Just(has_user_tables),
                )
            },
        )
        .prop_map(
            |(steps, written, install, initial, db, code, has_user_tables)| Case {
                steps,
                written,
                install,
                initial,
                db,
                code,
                has_user_tables,
            },
        )
}

impl Case {
    fn manifest(&self, versions: &[Version]) -> Manifest {
        let mut text = String::from("<upgrade project=\"p\"");
        if let Some(initial) = self.initial {
            text.push_str(&format!(" initial-version=\"{}\"", versions[initial]));
        }
        text.push_str(">\n");
        if self.install {
            text.push_str("<install><sql>SELECT 1</sql></install>\n");
        }
        for &index in &self.written {
            let (from, to) = self.steps[index];
            text.push_str(&format!(
                "<step name=\"s{from}-{to}\" from=\"{}\" to=\"{}\"><sql>SELECT 1</sql></step>\n",
                versions[from], versions[to]
            ));
        }
        text.push_str("</upgrade>\n");
        Manifest::parse(&text, Path::new("upgrade.xml"), None)
            .unwrap_or_else(|e| panic!("generated manifest refused: {e}\n{text}"))
    }
}

/// What DESIGN.md says the run starts from, or which refusal it expects.
enum Expected {
    Install,
    From(usize),
    Downgrade,
    InitialAboveCode,
    NoStart,
}

fn expected_start(case: &Case) -> Expected {
    match case.db {
        Some(db) if db > case.code => Expected::Downgrade,
        Some(db) => Expected::From(db),
        None if !case.has_user_tables && case.install => Expected::Install,
        None => match case.initial {
            Some(initial) if initial > case.code => Expected::InitialAboveCode,
            Some(initial) => Expected::From(initial),
            None => Expected::NoStart,
        },
    }
}

fn check_plan(case: &Case) -> Result<(), TestCaseError> {
    let versions = universe();
    let manifest = case.manifest(&versions);
    let code = &versions[case.code];
    let facts = DbFacts {
        version: case.db.map(|db| versions[db].clone()),
        has_user_tables: case.has_user_tables,
    };
    let result = plan(&manifest, code, &facts);
    let start = match expected_start(case) {
        Expected::Downgrade => {
            prop_assert!(
                matches!(result, Err(PlanError::Downgrade { .. })),
                "{result:?}"
            );
            return Ok(());
        }
        Expected::InitialAboveCode => {
            prop_assert!(
                matches!(result, Err(PlanError::InitialAboveCode { .. })),
                "{result:?}"
            );
            return Ok(());
        }
        Expected::NoStart => {
            prop_assert!(matches!(result, Err(PlanError::NoStart(_))), "{result:?}");
            return Ok(());
        }
        Expected::Install => {
            let plan = result.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(plan.items.len(), 1);
            prop_assert_eq!(plan.items[0].kind, ItemKind::Install);
            prop_assert_eq!(&plan.items[0].to, code);
            prop_assert!(plan.is_needed());
            return Ok(());
        }
        Expected::From(start) => start,
    };
    // Refused exactly when a step's range has the start or the code version strictly
    // inside it.
    let straddles = case
        .steps
        .iter()
        .any(|&(from, to)| (from < start && start < to) || (from < case.code && case.code < to));
    if straddles {
        prop_assert!(matches!(result, Err(PlanError::Straddle(_))), "{result:?}");
        return Ok(());
    }
    let plan = result.map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(plan.start.as_ref(), Some(&versions[start]));
    prop_assert_eq!(&plan.target, code);
    prop_assert_eq!(plan.is_needed(), start != case.code || case.db.is_none());

    // Contiguous from the start to the code version, every item moving strictly up.
    let mut at = versions[start].clone();
    for item in &plan.items {
        prop_assert_eq!(
            item.from.as_ref(),
            Some(&at),
            "not contiguous: {:?}",
            plan.items
        );
        prop_assert!(item.to > at, "not upward: {:?}", plan.items);
        at = item.to.clone();
    }
    prop_assert_eq!(&at, code);

    // The steps are exactly those inside [start, code], in version order.
    let mut inside: Vec<(usize, usize)> = case
        .steps
        .iter()
        .copied()
        .filter(|&(from, to)| start <= from && to <= case.code)
        .collect();
    inside.sort();
    let planned: Vec<(Version, Version)> = plan
        .items
        .iter()
        .filter(|item| item.kind == ItemKind::Step)
        .map(|item| (item.from.clone().unwrap(), item.to.clone()))
        .collect();
    let wanted: Vec<(Version, Version)> = inside
        .iter()
        .map(|&(from, to)| (versions[from].clone(), versions[to].clone()))
        .collect();
    prop_assert_eq!(planned, wanted);
    for item in plan.items.iter().filter(|item| item.kind == ItemKind::Step) {
        let step = &manifest.steps[item.step_index.unwrap()];
        prop_assert_eq!(
            (&step.from, &step.to),
            (item.from.as_ref().unwrap(), &item.to)
        );
        prop_assert_eq!(&step.name, &item.name);
    }

    // Version-only bumps exactly at gaps: never two in a row, each ending where the
    // next step starts or at the code version.
    for (index, item) in plan.items.iter().enumerate() {
        prop_assert_ne!(item.kind, ItemKind::Install);
        if item.kind != ItemKind::VersionOnly {
            continue;
        }
        match plan.items.get(index + 1) {
            Some(next) => prop_assert_eq!(next.kind, ItemKind::Step),
            None => prop_assert_eq!(&item.to, code),
        }
    }
    let gaps = {
        let mut gaps = 0;
        let mut current = start;
        for &(from, to) in &inside {
            gaps += usize::from(from > current);
            current = to;
        }
        gaps + usize::from(current < case.code)
    };
    let bumps = plan
        .items
        .iter()
        .filter(|item| item.kind == ItemKind::VersionOnly)
        .count();
    prop_assert_eq!(bumps, gaps);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn plans_follow_the_design(case in case()) {
        check_plan(&case)?;
    }
}

/// Random plans of several packages, each a chain of steps from 0 up, and random waits
/// of an item for another package at one of its versions.
/// Per package, per item: the package and version (an index) it waits for.
type Waits = Vec<Vec<Option<(usize, usize)>>>;

fn packages() -> impl Strategy<Value = (Vec<usize>, Waits)> {
    proptest::collection::vec(0usize..5, 1..5)
        .prop_flat_map(|lengths| {
            let count = lengths.len();
            let waits: Vec<_> = lengths
                .iter()
                .map(|&length| {
                    proptest::collection::vec(
                        proptest::option::weighted(0.3, (0..count, 0usize..6)),
                        length,
                    )
                })
                .collect();
            (Just(lengths), waits)
        })
        // Loading the application refuses a wait for the package itself or for a version
        // beyond the other package's code: those never reach `interleave`.
        .prop_map(|(lengths, waits)| {
            let waits = waits
                .into_iter()
                .enumerate()
                .map(|(package, items)| {
                    items
                        .into_iter()
                        .map(|wait| {
                            wait.filter(|&(other, at)| other != package && at <= lengths[other])
                        })
                        .collect()
                })
                .collect();
            (lengths, waits)
        })
}

fn chain(length: usize) -> Plan {
    let version = |n: usize| Version::parse(&format!("{n}.0.0")).unwrap();
    Plan {
        db_version: Some(version(0)),
        start: Some(version(0)),
        target: version(length),
        items: (0..length)
            .map(|n| PlanItem {
                kind: ItemKind::Step,
                name: format!("s{n}"),
                from: Some(version(n)),
                to: version(n + 1),
                step_index: Some(n),
            })
            .collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// A found order runs every item once, each package's in its own order, never before
    /// what it waits for, always taking the first package (root first) that can go; a
    /// refusal names a true circle of unmet waits.
    #[test]
    fn interleave_orders_or_finds_a_circle((lengths, waits) in packages()) {
        let plans: Vec<Plan> = lengths.iter().map(|&length| chain(length)).collect();
        let refs: Vec<&Plan> = plans.iter().collect();
        let wait = |p: usize, i: usize| -> Wait {
            waits[p][i].map(|(other, at)| (other, Version::parse(&format!("{at}.0.0")).unwrap()))
        };
        // Where each package is (its versions are 0, 1, … so the index is the version).
        let mut reached = vec![0usize; plans.len()];
        let ready = |reached: &[usize], p: usize, i: usize| {
            waits[p][i].is_none_or(|(other, at)| reached[other] >= at)
        };
        match interleave(&refs, &wait) {
            Ok(order) => {
                prop_assert_eq!(order.len(), lengths.iter().sum::<usize>());
                for &(package, item) in &order {
                    prop_assert_eq!(item, reached[package], "out of order: {:?}", order);
                    prop_assert!(ready(&reached, package, item), "ran before its wait: {:?}", order);
                    let first = (0..plans.len())
                        .find(|&p| reached[p] < lengths[p] && ready(&reached, p, reached[p]));
                    prop_assert_eq!(first, Some(package), "not the first ready package: {:?}", order);
                    reached[package] += 1;
                }
            }
            Err(stuck) => {
                prop_assert!(!stuck.chain.is_empty());
                for (index, &(package, item)) in stuck.chain.iter().enumerate() {
                    let (other, _) = waits[package][item].expect("a link of the circle waits");
                    let (next, _) = stuck.chain[(index + 1) % stuck.chain.len()];
                    prop_assert_eq!(other, next, "not a circle: {:?}", stuck.chain);
                }
                // Nothing could run in the end: a greedy replay gets stuck too.
                let mut next = vec![0usize; plans.len()];
                while let Some(p) = (0..plans.len())
                    .find(|&p| next[p] < lengths[p] && ready(&next, p, next[p]))
                {
                    next[p] += 1;
                }
                prop_assert!((0..plans.len()).any(|p| next[p] < lengths[p]));
                for &(package, item) in &stuck.chain {
                    prop_assert_eq!(next[package], item);
                    prop_assert!(!ready(&next, package, item));
                }
            }
        }
    }
}
