//! `upgrader lint`: the guard's findings for a dialect, and with `--fix` (MySQL), the
//! steps that need `transaction="none"` marked so in `upgrade.xml`, nothing else in the
//! file changed.

use std::io::Write;

use upgrader::engine::LintFinding;
use upgrader::error::Exit;
use upgrader::manifest::{fix, Format};
use upgrader::sql::Dialect;
use upgrader::{Engine, Error};

use crate::print_json;

/// `lint`, and with `fix`, marking the steps that need `transaction="none"` on MySQL.
pub(crate) fn lint(
    engine: &Engine,
    dialect: Dialect,
    fix: bool,
    json: bool,
    out: &mut impl Write,
) -> Result<u8, Error> {
    if fix && dialect != Dialect::MySql {
        return Err(Error::Config(format!(
            "lint --fix marks steps whose statements commit implicitly on MySQL; it has nothing to fix on {}: use --for mysql",
            dialect.name()
        )));
    }
    let mut findings = engine.lint(dialect);
    let needs = steps_needing_transaction_none(&findings);
    let mut marked = Vec::new();
    let projects = &engine.application().projects;
    if fix {
        // Every manifest is checked before any is changed.
        for project in projects {
            let manifest = &project.manifest;
            let root = project.name == engine.project().name;
            if manifest.format == Format::Legacy
                && (root || needs.fixable.iter().any(|(p, _)| *p == project.name))
            {
                let refusal = fix::FixError::Legacy {
                    path: manifest.path.clone(),
                };
                return Err(Error::Config(format!("lint --fix: {refusal}")));
            }
        }
        for project in projects {
            let steps: Vec<&str> = needs
                .fixable
                .iter()
                .filter(|(p, _)| *p == project.name)
                .map(|(_, step)| step.as_str())
                .collect();
            if steps.is_empty() {
                continue;
            }
            marked.extend(
                fix::mark_steps(&project.manifest.path, &project.dir, &steps)
                    .map_err(|error| Error::Config(format!("lint --fix: {error}")))?,
            );
        }
        findings.retain(|finding| {
            !needs
                .fixable
                .iter()
                .any(|(p, step)| *p == finding.project && *step == finding.step)
        });
    }
    let fix_hint = format!("upgrader lint --for {} --fix", dialect.name());
    if json {
        let mut body = serde_json::json!({
            "backend": dialect.name(),
            "findings": findings,
            "not_fixable": needs
                .not_fixable
                .iter()
                .map(|(project, step, reason)| {
                    serde_json::json!({ "project": project, "step": step, "reason": reason })
                })
                .collect::<Vec<_>>(),
        });
        if fix {
            body["marked"] = serde_json::json!(marked);
        } else {
            body["needs_transaction_none"] = serde_json::json!(needs
                .fixable
                .iter()
                .map(|(_, step)| step)
                .collect::<Vec<_>>());
        }
        print_json(out, &body);
    } else {
        for step in &marked {
            let _ = writeln!(
                out,
                "{}: step '{}': marked transaction=\"none\"",
                step.location, step.step
            );
        }
        if fix {
            let manifests: Vec<String> = projects
                .iter()
                .filter(|p| needs.fixable.iter().any(|(name, _)| *name == p.name))
                .map(|p| p.manifest.path.display().to_string())
                .collect();
            let _ = writeln!(
                out,
                "marked {} step(s) transaction=\"none\" in {}",
                marked.len(),
                if manifests.is_empty() {
                    engine.project().manifest.path.display().to_string()
                } else {
                    manifests.join(", ")
                }
            );
        }
        for finding in &findings {
            let _ = writeln!(out, "{finding}");
        }
        for (_, step, why) in &needs.not_fixable {
            let _ = writeln!(
                out,
                "step '{step}' was not marked transaction=\"none\": {why}"
            );
        }
        let _ = match findings.len() {
            0 => writeln!(out, "no statement would be refused on {}", dialect.name()),
            n => writeln!(
                out,
                "{n} statement(s) would be refused on {}",
                dialect.name()
            ),
        };
        let incurable = findings
            .iter()
            .filter(|finding| !finding.fixed_by_transaction_none)
            .count();
        if dialect == Dialect::MySql && incurable > 0 {
            let _ = writeln!(
                out,
                "{incurable} of them transaction=\"none\" would not cure (transaction control, unreadable SQL, install statements): change those by hand"
            );
        }
        if !fix && !needs.fixable.is_empty() {
            let _ = writeln!(
                out,
                "{} step(s) need transaction=\"none\" on {}: run `{fix_hint}` to mark them",
                needs.fixable.len(),
                dialect.name()
            );
        }
    }
    Ok(if findings.is_empty() {
        0
    } else {
        Exit::Error.code()
    })
}

/// Which steps `lint --fix` marks, and which it leaves alone and why.
struct FixPlan {
    /// Steps every finding of which `transaction="none"` would cure, in manifest order:
    /// (project, step).
    fixable: Vec<(String, String)>,
    /// Steps with a finding it would cure and one it would not: (project, step, why).
    not_fixable: Vec<(String, String, String)>,
}

fn steps_needing_transaction_none(findings: &[LintFinding]) -> FixPlan {
    let mut fixable: Vec<(String, String)> = Vec::new();
    let mut not_fixable: Vec<(String, String, String)> = Vec::new();
    for finding in findings {
        let (project, step) = (finding.project.as_str(), finding.step.as_str());
        if fixable.iter().any(|(p, s)| p == project && s == step)
            || not_fixable
                .iter()
                .any(|(p, s, _)| p == project && s == step)
        {
            continue;
        }
        let of_step = || {
            findings
                .iter()
                .filter(|f| f.project == project && f.step == step)
        };
        // Install findings are never cured this way (the install is not a step).
        if !of_step().any(|f| f.fixed_by_transaction_none) {
            continue;
        }
        match of_step().find(|f| !f.fixed_by_transaction_none) {
            None => fixable.push((project.to_string(), step.to_string())),
            Some(other) => not_fixable.push((
                project.to_string(),
                step.to_string(),
                format!(
                    "transaction=\"none\" would not cure {}: {}; fix that first",
                    if other.location.is_empty() {
                        "its unreadable SQL".to_string()
                    } else {
                        format!("`{}` at {}", other.statement, other.location)
                    },
                    other.reason
                ),
            )),
        }
    }
    FixPlan {
        fixable,
        not_fixable,
    }
}
