//! The pattern layer: well-known token formats found without knowing the value.
//!
//! The rules live in `rules/patterns.toml` (compiled in); see that file for its format.

use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde::Deserialize;

use hive_cred_core::{Error, ErrorKind, Result};

use super::Hit;

/// The rules data file, compiled into the binary.
pub(crate) const RULES_TOML: &str = include_str!("../../rules/patterns.toml");

#[derive(Deserialize)]
struct RulesFile {
    rule: Vec<RuleSpec>,
}

#[derive(Deserialize)]
#[allow(dead_code)] // examples and notes are read by tests and the README, not here
struct RuleSpec {
    name: String,
    regex: String,
    #[serde(default)]
    group: usize,
    min_entropy: Option<f64>,
    example: String,
    near_miss: String,
    false_positives: String,
}

struct Rule {
    regex: Regex,
    group: usize,
    min_entropy: Option<f64>,
}

/// Every rule, compiled into one set for the first pass and one regex each for spans.
pub(crate) struct Detector {
    set: RegexSet,
    rules: Vec<Rule>,
    names: Vec<String>,
    max_len: usize,
}

fn config(what: &str, rule: &str) -> Error {
    Error::new(ErrorKind::Config, format!("pattern rule {rule}: {what}"))
}

impl Detector {
    pub(crate) fn from_rules_file() -> Result<Detector> {
        let file: RulesFile = toml::from_str(RULES_TOML)
            .map_err(|e| Error::new(ErrorKind::Config, format!("pattern rules file: {e}")))?;
        let mut rules = Vec::with_capacity(file.rule.len());
        let mut names = Vec::with_capacity(file.rule.len());
        let mut max_len = 0;
        for spec in &file.rule {
            let hir = regex_syntax::ParserBuilder::new()
                .unicode(false)
                .utf8(false)
                .build()
                .parse(&spec.regex)
                .map_err(|e| config(&format!("does not parse: {e}"), &spec.name))?;
            let len = hir
                .properties()
                .maximum_len()
                .ok_or_else(|| config("has no maximum match length", &spec.name))?;
            max_len = max_len.max(len);
            let regex = RegexBuilder::new(&spec.regex)
                .unicode(false)
                .build()
                .map_err(|e| config(&format!("does not compile: {e}"), &spec.name))?;
            if spec.group >= regex.captures_len() {
                return Err(config("names a missing group", &spec.name));
            }
            rules.push(Rule {
                regex,
                group: spec.group,
                min_entropy: spec.min_entropy,
            });
            names.push(spec.name.clone());
        }
        let set = RegexSetBuilder::new(file.rule.iter().map(|r| r.regex.as_str()))
            .unicode(false)
            .build()
            .map_err(|e| Error::new(ErrorKind::Config, format!("pattern rule set: {e}")))?;
        Ok(Detector {
            set,
            rules,
            names,
            max_len,
        })
    }

    /// Rule names, in file order (marker `i` of the layer is rule `i`).
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// The longest text one rule can match, in bytes.
    pub(crate) fn max_len(&self) -> usize {
        self.max_len
    }

    /// Appends a hit (marker `base + rule`) for every rule match starting at or after
    /// `from`; bytes before `from` are context for `\b` only.
    pub(super) fn hits(&self, hay: &[u8], from: usize, base: u32, out: &mut Vec<Hit>) {
        if from >= hay.len() {
            return;
        }
        for i in self.set.matches_at(hay, from).iter() {
            let rule = &self.rules[i];
            let mut pos = from;
            while pos < hay.len() {
                let Some(caps) = rule.regex.captures_at(hay, pos) else {
                    break;
                };
                let (Some(whole), Some(m)) = (caps.get(0), caps.get(rule.group)) else {
                    break;
                };
                pos = whole.end().max(whole.start() + 1);
                if rule
                    .min_entropy
                    .is_some_and(|min| !high_entropy(m.as_bytes(), min))
                {
                    continue;
                }
                out.push(Hit {
                    start: m.start(),
                    end: m.end(),
                    marker: base + i as u32,
                });
            }
        }
    }
}

/// Shannon entropy of `value` (bits per byte) of at least `min`, and at least two of
/// the classes lower case, upper case, digit, other.
fn high_entropy(value: &[u8], min: f64) -> bool {
    let mut counts = [0u32; 256];
    let mut classes = 0u8;
    for &b in value {
        counts[usize::from(b)] += 1;
        classes |= match b {
            b'a'..=b'z' => 1,
            b'A'..=b'Z' => 2,
            b'0'..=b'9' => 4,
            _ => 8,
        };
    }
    let n = value.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    entropy >= min && classes.count_ones() >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_file_compiles_with_bounded_rules() {
        let d = Detector::from_rules_file().expect("rules compile");
        assert!(d.names().len() >= 11);
        assert!(
            d.max_len() > 4096 && d.max_len() < 16 * 1024,
            "{}",
            d.max_len()
        );
    }

    #[test]
    fn entropy_needs_spread_and_two_classes() {
        assert!(high_entropy(b"Xq7#mP2v!Lr9wZ4k", 3.0));
        assert!(!high_entropy(b"aaaaaaaaaaaaaaaa", 3.0));
        assert!(
            !high_entropy(b"correcthorsebatterystaple", 3.0),
            "one class"
        );
        assert!(!high_entropy(b"abab1212abab1212", 3.0), "low entropy");
    }
}
