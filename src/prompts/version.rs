//! Prompt version constraints in the original's (Poetry's) syntax, resolved with `semver`.
//!
//! Clients send constraints such as `^1.0.0` (the default), `~1.2`, `1.0.0` or `==1.0.0` (exact),
//! `>=1.0.0, <2.0.0` (ranges, comma- or space-separated), `1.*`, `!=1.0.1`, and alternatives
//! joined by `||`. Two spellings mean something different in Poetry and in Cargo, and Poetry wins
//! here: a bare version is **exact** (Cargo reads it as a caret), and `=1.2` / `==1.2` mean
//! exactly `1.2.0` (Cargo's `=1.2` is any `1.2.x`). `~=` is PEP 440's compatible release. Among
//! the versions a prompt ships, the highest one that matches wins.

use std::fmt;

use semver::{BuildMetadata, Comparator, Op, Prerelease, Version, VersionReq};

/// The constraint `/v1/prompts` uses when the request names none.
pub const DEFAULT_CONSTRAINT: &str = "^1.0.0";

/// A constraint that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConstraint(pub String);

impl fmt::Display for InvalidConstraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid version constraint {:?}", self.0)
    }
}

impl std::error::Error for InvalidConstraint {}

/// One `,`-joined group: every comparator must match and no excluded version may.
#[derive(Debug, Clone, PartialEq)]
struct Conjunction {
    req: VersionReq,
    excluded: Vec<Version>,
}

impl Conjunction {
    fn matches(&self, version: &Version) -> bool {
        self.req.matches(version) && !self.excluded.contains(version)
    }
}

/// A parsed constraint: alternatives (`||`), any of which may match.
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    alternatives: Vec<Conjunction>,
}

/// `1`, `1.2`, `1.2.3` (with an optional pre-release) as major, optional minor, optional patch.
struct Partial {
    major: u64,
    minor: Option<u64>,
    patch: Option<u64>,
    pre: Prerelease,
}

fn parse_partial(text: &str, whole: &str) -> Result<Partial, InvalidConstraint> {
    let bad = || InvalidConstraint(whole.to_string());
    let text = text.strip_prefix('v').unwrap_or(text);
    let (numbers, pre) = match text.split_once('-') {
        Some((n, p)) => (n, Prerelease::new(p).map_err(|_| bad())?),
        None => (text, Prerelease::EMPTY),
    };
    let mut parts = numbers.split('.');
    let mut next = |required: bool| -> Result<Option<u64>, InvalidConstraint> {
        match parts.next() {
            None if !required => Ok(None),
            None => Err(bad()),
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().map(Some).map_err(|_| bad())
            }
            Some(_) => Err(bad()),
        }
    };
    let major = next(true)?.ok_or_else(bad)?;
    let minor = next(false)?;
    let patch = if minor.is_some() { next(false)? } else { None };
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(Partial {
        major,
        minor,
        patch,
        pre,
    })
}

fn comparator(op: Op, p: &Partial) -> Comparator {
    Comparator {
        op,
        major: p.major,
        minor: p.minor,
        patch: p.patch,
        pre: p.pre.clone(),
    }
}

/// The exact version a partial names: missing parts are zero (`1.2` is `1.2.0`).
fn full(p: &Partial) -> Version {
    Version {
        major: p.major,
        minor: p.minor.unwrap_or(0),
        patch: p.patch.unwrap_or(0),
        pre: p.pre.clone(),
        build: BuildMetadata::EMPTY,
    }
}

fn exact(p: &Partial) -> Comparator {
    let v = full(p);
    Comparator {
        op: Op::Exact,
        major: v.major,
        minor: Some(v.minor),
        patch: Some(v.patch),
        pre: v.pre,
    }
}

/// Split a group into terms: commas and whitespace separate terms, but whitespace right after an
/// operator belongs to the term (`>= 1.2, < 2` is two terms).
fn terms(group: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut after_operator = false;
    for c in group.chars() {
        if c == ',' || c.is_whitespace() {
            if c.is_whitespace() && after_operator {
                continue;
            }
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            after_operator = false;
            continue;
        }
        after_operator = matches!(c, '<' | '>' | '=' | '!' | '^' | '~');
        current.push(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn parse_group(group: &str, whole: &str) -> Result<Conjunction, InvalidConstraint> {
    let bad = || InvalidConstraint(whole.to_string());
    let mut comparators = Vec::new();
    let mut excluded = Vec::new();
    let terms = terms(group);
    if terms.is_empty() {
        return Err(bad());
    }
    for term in terms {
        let term = term.as_str();
        if term == "*" {
            continue;
        }
        if let Some(rest) = term.strip_suffix(".*") {
            // `1.*`, `1.2.*`: a wildcard.
            let p = parse_partial(rest, whole)?;
            if p.patch.is_some() || !p.pre.is_empty() {
                return Err(bad());
            }
            comparators.push(comparator(Op::Wildcard, &p));
            continue;
        }
        let (op, rest) = [
            ("~=", "compatible"),
            ("==", "exact"),
            ("!=", "not"),
            (">=", ">="),
            ("<=", "<="),
            (">", ">"),
            ("<", "<"),
            ("=", "exact"),
            ("^", "^"),
            ("~", "~"),
        ]
        .iter()
        .find_map(|(prefix, op)| term.strip_prefix(prefix).map(|rest| (*op, rest)))
        .unwrap_or(("exact", term));
        let p = parse_partial(rest, whole)?;
        match op {
            "exact" => comparators.push(exact(&p)),
            "not" => excluded.push(full(&p)),
            ">=" => comparators.push(comparator(Op::GreaterEq, &p)),
            "<=" => comparators.push(comparator(Op::LessEq, &p)),
            ">" => comparators.push(comparator(Op::Greater, &p)),
            "<" => comparators.push(comparator(Op::Less, &p)),
            "^" => comparators.push(comparator(Op::Caret, &p)),
            "~" => comparators.push(comparator(Op::Tilde, &p)),
            _ => {
                // PEP 440 `~=X.Y` is `>=X.Y, ==X.*`; `~=X.Y.Z` is `>=X.Y.Z, ==X.Y.*`.
                if p.minor.is_none() {
                    return Err(bad());
                }
                comparators.push(comparator(Op::GreaterEq, &p));
                let upper = Partial {
                    major: p.major,
                    minor: if p.patch.is_some() { p.minor } else { None },
                    patch: None,
                    pre: Prerelease::EMPTY,
                };
                comparators.push(comparator(Op::Wildcard, &upper));
            }
        }
    }
    Ok(Conjunction {
        req: VersionReq { comparators },
        excluded,
    })
}

impl Constraint {
    /// Parse a constraint (see the module docs for the syntax).
    pub fn parse(text: &str) -> Result<Constraint, InvalidConstraint> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(InvalidConstraint(text.to_string()));
        }
        let alternatives = trimmed
            .split("||")
            .map(|group| parse_group(group.trim(), text))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Constraint { alternatives })
    }

    /// Whether `version` satisfies the constraint.
    pub fn matches(&self, version: &Version) -> bool {
        self.alternatives.iter().any(|a| a.matches(version))
    }

    /// The highest of `versions` that satisfies the constraint.
    pub fn best<'a>(&self, versions: impl IntoIterator<Item = &'a Version>) -> Option<&'a Version> {
        versions.into_iter().filter(|v| self.matches(v)).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn best(constraint: &str, shipped: &[&str]) -> Option<String> {
        let versions: Vec<Version> = shipped.iter().map(|s| v(s)).collect();
        Constraint::parse(constraint)
            .unwrap()
            .best(&versions)
            .map(|v| v.to_string())
    }

    const SHIPPED: &[&str] = &[
        "0.9.0",
        "1.0.0",
        "1.0.1",
        "1.1.0",
        "1.2.3",
        "1.3.0-rc.1",
        "2.0.0",
        "2.1.0",
    ];

    #[test]
    fn caret_takes_the_highest_compatible() {
        assert_eq!(best("^1.0.0", SHIPPED).as_deref(), Some("1.2.3"));
        assert_eq!(best("^1", SHIPPED).as_deref(), Some("1.2.3"));
        assert_eq!(best("^2.0.0", SHIPPED).as_deref(), Some("2.1.0"));
        assert_eq!(best("^0.9", SHIPPED).as_deref(), Some("0.9.0"));
        assert_eq!(best("^3.0.0", SHIPPED), None);
    }

    #[test]
    fn tilde_stays_within_the_minor() {
        assert_eq!(best("~1.0", SHIPPED).as_deref(), Some("1.0.1"));
        assert_eq!(best("~1.0.0", SHIPPED).as_deref(), Some("1.0.1"));
        assert_eq!(best("~1", SHIPPED).as_deref(), Some("1.2.3"));
        assert_eq!(best("~=1.0", SHIPPED).as_deref(), Some("1.2.3"));
        assert_eq!(best("~=1.0.0", SHIPPED).as_deref(), Some("1.0.1"));
    }

    #[test]
    fn bare_and_equal_versions_are_exact() {
        assert_eq!(best("1.0.0", SHIPPED).as_deref(), Some("1.0.0"));
        assert_eq!(best("=1.0.0", SHIPPED).as_deref(), Some("1.0.0"));
        assert_eq!(best("==1.1", SHIPPED).as_deref(), Some("1.1.0"));
        assert_eq!(best("1.0", SHIPPED).as_deref(), Some("1.0.0"));
        assert_eq!(best("1.0.2", SHIPPED), None);
    }

    #[test]
    fn ranges_wildcards_exclusions_and_alternatives() {
        assert_eq!(best(">=1.0.0, <2.0.0", SHIPPED).as_deref(), Some("1.2.3"));
        assert_eq!(best(">= 1.0, < 1.2", SHIPPED).as_deref(), Some("1.1.0"));
        assert_eq!(best(">=1.0.0 <1.1.0", SHIPPED).as_deref(), Some("1.0.1"));
        assert_eq!(best(">1.2.3", SHIPPED).as_deref(), Some("2.1.0"));
        assert_eq!(best("<=1.0.1", SHIPPED).as_deref(), Some("1.0.1"));
        assert_eq!(best("1.*", SHIPPED).as_deref(), Some("1.2.3"));
        assert_eq!(best("*", SHIPPED).as_deref(), Some("2.1.0"));
        assert_eq!(best("^1.0.0, !=1.2.3", SHIPPED).as_deref(), Some("1.1.0"));
        assert_eq!(best("^0.9 || ~1.0", SHIPPED).as_deref(), Some("1.0.1"));
    }

    #[test]
    fn pre_releases_only_when_asked_for() {
        assert_eq!(best("^1.2.3", SHIPPED).as_deref(), Some("1.2.3"));
        assert_eq!(best("=1.3.0-rc.1", SHIPPED).as_deref(), Some("1.3.0-rc.1"));
    }

    #[test]
    fn invalid_constraints_are_refused() {
        for bad in [
            "", " ", "abc", "^", "1.x.0", "^1.0.0.0", ">=", "1..0", "^a.b", "~=1", "1.2.3.*", "||",
        ] {
            assert!(Constraint::parse(bad).is_err(), "{bad:?} should be invalid");
        }
    }
}
