//! The demo's step plugin. `fill_slugs` gives every customer a URL slug: accents
//! transliterated, punctuation turned into hyphens, and duplicates numbered (`ada`,
//! `ada-2`), which is awkward in portable SQL and plain in Rust.

use std::collections::HashSet;

use upgrader_plugin::{export_steps, Result, Run, Value};

/// Fills `customers.slug` where it is empty.
fn fill_slugs(run: &mut Run) -> Result<()> {
    let mut taken: HashSet<String> = run
        .query("SELECT slug FROM customers WHERE slug IS NOT NULL", &[])?
        .into_iter()
        .filter_map(|row| row[0].as_text().map(str::to_string))
        .collect();
    let pending = run.query(
        "SELECT id, name FROM customers WHERE slug IS NULL ORDER BY id",
        &[],
    )?;
    for row in &pending {
        let base = slug(row[1].as_text().unwrap_or_default());
        let base = if base.is_empty() {
            "customer".to_string()
        } else {
            base
        };
        let mut candidate = base.clone();
        let mut number = 1;
        while taken.contains(&candidate) {
            number += 1;
            candidate = format!("{base}-{number}");
        }
        run.execute_with(
            "UPDATE customers SET slug = ? WHERE id = ?",
            &[Value::from(candidate.as_str()), row[0].clone()],
        )?;
        taken.insert(candidate);
    }
    run.log(format!("{} customer slug(s) filled", pending.len()));
    Ok(())
}

/// `"Zoë O'Brien"` -> `"zoe-o-brien"`.
fn slug(name: &str) -> String {
    let mut out = String::new();
    for ch in name.chars().flat_map(char::to_lowercase) {
        let ascii = match ch {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => "a",
            'æ' => "ae",
            'ç' => "c",
            'è' | 'é' | 'ê' | 'ë' => "e",
            'ì' | 'í' | 'î' | 'ï' => "i",
            'ñ' => "n",
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' => "o",
            'ù' | 'ú' | 'û' | 'ü' => "u",
            'ý' | 'ÿ' => "y",
            'ß' => "ss",
            'ł' => "l",
            c if c.is_ascii_alphanumeric() => {
                out.push(c);
                continue;
            }
            _ => "-",
        };
        if ascii == "-" {
            if !out.is_empty() && !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push_str(ascii);
        }
    }
    out.trim_end_matches('-').to_string()
}

export_steps!(fill_slugs);

#[cfg(test)]
mod tests {
    use super::slug;

    #[test]
    fn slugs() {
        assert_eq!(slug("Zoë O'Brien"), "zoe-o-brien");
        assert_eq!(slug("  Ada  "), "ada");
        assert_eq!(slug("Łukasz"), "lukasz");
        assert_eq!(slug("!!!"), "");
    }
}
