//! PEP 440 versions, parsed and ordered as Python's `packaging.version.Version` does.
//!
//! Duo Chat offers a tool only to GitLab instances at or above the tool's minimum version
//! (`X-Gitlab-Version`), and the original compares with `packaging`: `17.5.0-pre` is the release
//! candidate `17.5.0rc0`, so it sorts below `17.5.0` and above `17.4.9`; a string `packaging`
//! cannot parse (`17.5.0-ee`, an empty header) is invalid, and an invalid version is never
//! compatible. Semver would order these differently, hence this module.

use std::cmp::Ordering;
use std::sync::LazyLock;

use regex::Regex;

/// `packaging`'s `VERSION_PATTERN`, anchored and case-insensitive as `Version` compiles it.
static PATTERN: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)^\s*v?",
        r"(?:(?:(?P<epoch>[0-9]+)!)?",
        r"(?P<release>[0-9]+(?:\.[0-9]+)*)",
        r"(?P<pre>[-_\.]?(?P<pre_l>alpha|a|beta|b|preview|pre|c|rc)[-_\.]?(?P<pre_n>[0-9]+)?)?",
        r"(?P<post>(?:-(?P<post_n1>[0-9]+))|(?:[-_\.]?(?P<post_l>post|rev|r)[-_\.]?(?P<post_n2>[0-9]+)?))?",
        r"(?P<dev>[-_\.]?(?P<dev_l>dev)[-_\.]?(?P<dev_n>[0-9]+)?)?)",
        r"(?:\+(?P<local>[a-z0-9]+(?:[-_\.][a-z0-9]+)*))?\s*$",
    ))
    .ok()
});

/// A non-negative integer of any size (Python's ints are unbounded), ordered numerically.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Num(String);

impl Num {
    fn parse(digits: &str) -> Num {
        let trimmed = digits.trim_start_matches('0');
        Num(trimmed.to_string())
    }

    fn zero() -> Num {
        Num(String::new())
    }

    fn is_zero(&self) -> bool {
        self.0.is_empty()
    }
}

impl Ord for Num {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for Num {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The pre-release part of the sort key (`_pre` in `packaging`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Pre {
    /// A dev release without pre or post release sorts before every pre-release.
    Below,
    /// `a`, `b` or `rc` (0, 1, 2) and its number.
    Release(u8, Num),
    /// No pre-release: after every pre-release.
    Above,
}

/// The post-release part (`_post`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Post {
    None,
    Release(Num),
}

/// The dev-release part (`_dev`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Dev {
    Release(Num),
    None,
}

/// One local-version segment: strings sort before numbers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum LocalPart {
    Str(String),
    Int(Num),
}

/// A parsed version, compared by `packaging`'s key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    epoch: Num,
    /// Release numbers with trailing zeros removed (`1.0` == `1`).
    release: Vec<Num>,
    pre: Pre,
    post: Post,
    dev: Dev,
    /// `None` sorts before any local version.
    local: Option<Vec<LocalPart>>,
}

impl Version {
    /// Parse `text`; `None` where `packaging` raises `InvalidVersion`.
    pub fn parse(text: &str) -> Option<Version> {
        let caps = PATTERN.as_ref()?.captures(text)?;
        let num = |name: &str| caps.name(name).map(|m| Num::parse(m.as_str()));
        let epoch = num("epoch").unwrap_or_else(Num::zero);
        let mut release: Vec<Num> = caps
            .name("release")?
            .as_str()
            .split('.')
            .map(Num::parse)
            .collect();
        while release.last().is_some_and(Num::is_zero) {
            release.pop();
        }
        let pre = caps.name("pre_l").map(|l| {
            let rank = match l.as_str().to_ascii_lowercase().as_str() {
                "a" | "alpha" => 0,
                "b" | "beta" => 1,
                _ => 2,
            };
            (rank, num("pre_n").unwrap_or_else(Num::zero))
        });
        let post = if let Some(n) = num("post_n1") {
            Some(n)
        } else if caps.name("post_l").is_some() {
            Some(num("post_n2").unwrap_or_else(Num::zero))
        } else {
            None
        };
        let dev = caps
            .name("dev_l")
            .map(|_| num("dev_n").unwrap_or_else(Num::zero));
        let local = caps.name("local").map(|l| {
            l.as_str()
                .split(['-', '_', '.'])
                .map(|part| {
                    if part.bytes().all(|b| b.is_ascii_digit()) {
                        LocalPart::Int(Num::parse(part))
                    } else {
                        LocalPart::Str(part.to_ascii_lowercase())
                    }
                })
                .collect()
        });
        let pre = match (pre, &post, &dev) {
            (None, None, Some(_)) => Pre::Below,
            (None, _, _) => Pre::Above,
            (Some((rank, n)), _, _) => Pre::Release(rank, n),
        };
        Some(Version {
            epoch,
            release,
            pre,
            post: post.map_or(Post::None, Post::Release),
            dev: dev.map_or(Dev::None, Dev::Release),
            local,
        })
    }
}

/// Whether `actual` is at least `minimum`, as the original's `is_compatible` decides: no
/// minimum is always compatible; an empty or unparsable version never is.
pub fn at_least(minimum: Option<&str>, actual: &str) -> bool {
    let Some(minimum) = minimum else {
        return true;
    };
    if actual.is_empty() {
        return false;
    }
    match (Version::parse(minimum), Version::parse(actual)) {
        (Some(min), Some(v)) => min <= v,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap_or_else(|| panic!("{s} parses"))
    }

    #[test]
    fn pre_suffix_is_a_release_candidate() {
        assert_eq!(v("17.5.0-pre"), v("17.5.0rc0"));
        assert!(v("17.5.0-pre") < v("17.5.0"));
        assert!(v("17.5.0-pre") > v("17.4.9"));
        assert!(v("17.5.0-pre") < v("17.5.0-rc1"));
        assert!(v("17.5.0-pre") < v("17.5.1-pre"));
        assert_eq!(v("17.5"), v("17.5.0"));
        assert_eq!(v("v17.5.0"), v("17.5.0"));
    }

    #[test]
    fn packagings_ordering() {
        let ordered = [
            "1.0.dev0",
            "1.0a1",
            "1.0a2.dev1",
            "1.0a2",
            "1.0b1",
            "1.0rc1",
            "1.0",
            "1.0+abc",
            "1.0+5",
            "1.0.post1.dev0",
            "1.0.post1",
            "1.1",
            "1!0.1",
        ];
        for w in ordered.windows(2) {
            assert!(v(w[0]) < v(w[1]), "{} < {}", w[0], w[1]);
        }
        assert_eq!(v("1.0-1"), v("1.0.post1"));
        assert_eq!(v("1.0ALPHA1"), v("1.0a1"));
        assert_eq!(
            v("99999999999999999999999.1"),
            v("99999999999999999999999.1.0")
        );
        assert!(v("99999999999999999999999") > v("9999999999999999999999"));
    }

    #[test]
    fn invalid_versions_are_never_compatible() {
        for bad in ["", "17.5.0-ee", "latest", "17.x", "1.0+", "1..0"] {
            assert!(Version::parse(bad).is_none() || bad.is_empty(), "{bad}");
            assert!(!at_least(Some("17.5.0-pre"), bad), "{bad}");
        }
        assert!(at_least(None, ""));
        assert!(at_least(Some("17.5.0-pre"), "17.5.0-pre"));
        assert!(at_least(Some("17.5.0-pre"), "17.6.0"));
        assert!(!at_least(Some("17.5.0-pre"), "17.4.0"));
        assert!(!at_least(Some("not a version"), "17.6.0"));
    }
}
