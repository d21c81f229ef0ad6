//! Version gates: the GitLab Language Server version header and PEP 440
//! comparisons.
//!
//! The original parses `X-Gitlab-Language-Server-Version` with Python's
//! `packaging.version.Version` and falls back to `0.0.0` when the header is
//! missing, empty or not a valid PEP 440 version; "advanced context" (the
//! client's `context` / `code_context` items) is used only from language
//! server 6.3.0 on. Chat tools are gated the same way on `X-Gitlab-Version`,
//! whose GitLab form `17.5.0-pre` PEP 440 reads as `17.5.0rc0`, a pre-release
//! that sorts *below* `17.5.0`. Getting this exactly right matters because a
//! client sitting on a boundary version must see the same features as with the
//! original, so this is a faithful port of `packaging`'s grammar and ordering
//! (epochs, pre/post/dev releases, local versions, arbitrary-size numbers)
//! rather than a semver parser.

use std::cmp::Ordering;
use std::sync::OnceLock;

use regex::Regex;

/// The language-server version from which the original uses advanced context.
pub const ADVANCED_CONTEXT_MIN_VERSION: &str = "6.3.0";

/// `packaging.version.VERSION_PATTERN`, anchored like `Version.__init__`
/// (`^\s*` ... `\s*$`, verbose, case-insensitive). `[\s\x1c-\x1f]` stands for
/// Python's `\s`, which also matches the four ASCII separator controls.
const PEP440_PATTERN: &str = r"(?xi)
    ^[\s\x1c-\x1f]*
    v?
    (?:
        (?:(?P<epoch>[0-9]+)!)?
        (?P<release>[0-9]+(?:\.[0-9]+)*)
        (?P<pre>
            [-_.]?
            (?P<pre_l>alpha|a|beta|b|preview|pre|c|rc)
            [-_.]?
            (?P<pre_n>[0-9]+)?
        )?
        (?P<post>
            (?:-(?P<post_n1>[0-9]+))
            |
            (?:
                [-_.]?
                (?P<post_l>post|rev|r)
                [-_.]?
                (?P<post_n2>[0-9]+)?
            )
        )?
        (?P<dev>
            [-_.]?
            (?P<dev_l>dev)
            [-_.]?
            (?P<dev_n>[0-9]+)?
        )?
    )
    (?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?
    [\s\x1c-\x1f]*$";

fn pep440_regex() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    RE.get_or_init(|| Regex::new(PEP440_PATTERN).ok()).as_ref()
}

/// A non-negative integer of any size, kept as its decimal digits without
/// leading zeros (zero is the empty string), so `2^64` and beyond compare
/// correctly, as Python integers do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct VersionNumber(String);

impl VersionNumber {
    fn parse(digits: &str) -> VersionNumber {
        VersionNumber(digits.trim_start_matches('0').to_owned())
    }

    fn is_zero(&self) -> bool {
        self.0.is_empty()
    }
}

impl Ord for VersionNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for VersionNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A pre-release kind, in PEP 440 order (`a` < `b` < `rc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PreRelease {
    /// `a`, `alpha`
    Alpha,
    /// `b`, `beta`
    Beta,
    /// `rc`, `c`, `pre`, `preview`
    Rc,
}

/// One dot-separated segment of a local version label (`+ubuntu.1`):
/// alphanumeric segments sort before numeric ones.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum LocalSegment {
    Alpha(String),
    Number(VersionNumber),
}

/// A value that may be replaced by negative or positive infinity in a sort
/// key, like `packaging`'s `NegativeInfinity` / `Infinity` sentinels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Bound<T> {
    NegInf,
    Value(T),
    Inf,
}

/// A parsed PEP 440 version.
#[derive(Debug, Clone)]
pub struct Pep440Version {
    epoch: VersionNumber,
    release: Vec<VersionNumber>,
    pre: Option<(PreRelease, VersionNumber)>,
    post: Option<VersionNumber>,
    dev: Option<VersionNumber>,
    local: Option<Vec<LocalSegment>>,
}

type SortKey = (
    VersionNumber,
    Vec<VersionNumber>,
    Bound<(PreRelease, VersionNumber)>,
    Bound<VersionNumber>,
    Bound<VersionNumber>,
    Bound<Vec<LocalSegment>>,
);

impl Pep440Version {
    /// Parses a version the way `packaging.version.Version(text)` does;
    /// `None` where it would raise `InvalidVersion`.
    pub fn parse(text: &str) -> Option<Pep440Version> {
        let caps = pep440_regex()?.captures(text)?;
        let group = |name: &str| caps.name(name).map(|m| m.as_str());

        let epoch = group("epoch").map(VersionNumber::parse).unwrap_or_default();
        let release = group("release")?
            .split('.')
            .map(VersionNumber::parse)
            .collect();
        let pre = group("pre_l").map(|letter| {
            let kind = match letter.to_ascii_lowercase().as_str() {
                "a" | "alpha" => PreRelease::Alpha,
                "b" | "beta" => PreRelease::Beta,
                _ => PreRelease::Rc,
            };
            let number = group("pre_n").map(VersionNumber::parse).unwrap_or_default();
            (kind, number)
        });
        let post = if group("post").is_some() {
            Some(
                group("post_n1")
                    .or_else(|| group("post_n2"))
                    .map(VersionNumber::parse)
                    .unwrap_or_default(),
            )
        } else {
            None
        };
        let dev =
            group("dev_l").map(|_| group("dev_n").map(VersionNumber::parse).unwrap_or_default());
        let local = group("local").map(|label| {
            label
                .split(['-', '_', '.'])
                .map(|part| {
                    if part.bytes().all(|b| b.is_ascii_digit()) {
                        LocalSegment::Number(VersionNumber::parse(part))
                    } else {
                        LocalSegment::Alpha(part.to_ascii_lowercase())
                    }
                })
                .collect()
        });

        Some(Pep440Version {
            epoch,
            release,
            pre,
            post,
            dev,
            local,
        })
    }

    /// Parses leniently like the original's `LanguageServerVersion.from_string`:
    /// missing, empty or invalid → `0.0.0`.
    pub fn parse_lenient(text: Option<&str>) -> Pep440Version {
        text.filter(|t| !t.is_empty())
            .and_then(Pep440Version::parse)
            .unwrap_or_else(Pep440Version::zero)
    }

    /// `0.0.0`.
    pub fn zero() -> Pep440Version {
        Pep440Version {
            epoch: VersionNumber::default(),
            release: vec![VersionNumber::default(); 3],
            pre: None,
            post: None,
            dev: None,
            local: None,
        }
    }

    /// Whether this is a pre-release (`a`/`b`/`rc`) or a dev release.
    pub fn is_prerelease(&self) -> bool {
        self.pre.is_some() || self.dev.is_some()
    }

    /// `packaging.version._cmpkey`.
    fn sort_key(&self) -> SortKey {
        let mut release = self.release.clone();
        while release.last().is_some_and(VersionNumber::is_zero) {
            release.pop();
        }
        let pre = match (&self.pre, &self.post, &self.dev) {
            (None, None, Some(_)) => Bound::NegInf,
            (None, _, _) => Bound::Inf,
            (Some(pre), _, _) => Bound::Value(pre.clone()),
        };
        let post = self.post.clone().map(Bound::Value).unwrap_or(Bound::NegInf);
        let dev = self.dev.clone().map(Bound::Value).unwrap_or(Bound::Inf);
        let local = self
            .local
            .clone()
            .map(Bound::Value)
            .unwrap_or(Bound::NegInf);
        (self.epoch.clone(), release, pre, post, dev, local)
    }
}

impl PartialEq for Pep440Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Pep440Version {}

impl Ord for Pep440Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sort_key().cmp(&other.sort_key())
    }
}

impl PartialOrd for Pep440Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// `Version(version) >= Version(minimum)` under PEP 440, e.g.
/// `pep440_at_least("17.5.0-pre", "17.5.0")` is false (it is `17.5.0rc0`)
/// and `pep440_at_least("17.5.0-pre", "17.5.0-pre")` is true.
///
/// An empty or invalid `version` counts as `0.0.0`, like the language-server
/// header; an invalid `minimum` (a programming error) makes the gate closed.
pub fn pep440_at_least(version: &str, minimum: &str) -> bool {
    match Pep440Version::parse(minimum) {
        Some(min) => Pep440Version::parse_lenient(Some(version)) >= min,
        None => false,
    }
}

/// Whether the `X-Gitlab-Language-Server-Version` header value allows
/// advanced context (≥ 6.3.0; missing or invalid → 0.0.0 → no).
pub fn supports_advanced_context(header: Option<&str>) -> bool {
    match Pep440Version::parse(ADVANCED_CONTEXT_MIN_VERSION) {
        Some(min) => Pep440Version::parse_lenient(header) >= min,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Pep440Version {
        match Pep440Version::parse(text) {
            Some(version) => version,
            None => panic!("{text} should parse"),
        }
    }

    #[test]
    fn advanced_context_gate() {
        assert!(!supports_advanced_context(None));
        assert!(!supports_advanced_context(Some("")));
        assert!(!supports_advanced_context(Some("garbage")));
        assert!(!supports_advanced_context(Some("6.2.99")));
        assert!(!supports_advanced_context(Some("6.3.0rc1")));
        assert!(!supports_advanced_context(Some("6.3.0.dev5")));
        assert!(!supports_advanced_context(Some("6.3.0-pre")));
        assert!(supports_advanced_context(Some("6.3.0")));
        assert!(supports_advanced_context(Some("6.3")));
        assert!(supports_advanced_context(Some("v6.3.0")));
        assert!(supports_advanced_context(Some(" 6.3.0 ")));
        assert!(supports_advanced_context(Some("6.3.0.post1")));
        assert!(supports_advanced_context(Some("6.3.0+local")));
        assert!(supports_advanced_context(Some("6.10.0")));
        assert!(supports_advanced_context(Some("7.0.0")));
        assert!(supports_advanced_context(Some("1!0.1")));
        assert!(!supports_advanced_context(Some("6.3.0-beta.1")));
        // Semver-style build metadata and prerelease forms PEP 440 rejects.
        assert!(!supports_advanced_context(Some("7.0.0-alpha.beta.1")));
        assert!(!supports_advanced_context(Some("7.0.0 beta")));
    }

    #[test]
    fn gitlab_pre_suffix_is_rc0() {
        assert_eq!(v("17.5.0-pre"), v("17.5.0rc0"));
        assert_eq!(v("17.5.0-pre"), v("17.5.0.rc"));
        assert!(v("17.5.0-pre") < v("17.5.0"));
        assert!(v("17.5.0-pre") > v("17.4.9"));
        assert!(pep440_at_least("17.5.0-pre", "17.5.0-pre"));
        assert!(pep440_at_least("17.5.0", "17.5.0-pre"));
        assert!(pep440_at_least("17.6.0-pre", "17.5.0"));
        assert!(!pep440_at_least("17.5.0-pre", "17.5.0"));
        assert!(!pep440_at_least("17.4.0", "17.5.0-pre"));
        assert!(pep440_at_least("17.10.0-pre", "17.5.0-pre"));
    }

    #[test]
    fn invalid_version_counts_as_zero_and_invalid_minimum_closes() {
        assert!(pep440_at_least("nonsense", "0.0.0"));
        assert!(pep440_at_least("", "0"));
        assert!(!pep440_at_least("nonsense", "0.0.1"));
        assert!(!pep440_at_least("99.0", "not a version"));
        assert_eq!(Pep440Version::parse_lenient(Some("x")), v("0.0.0"));
        assert_eq!(Pep440Version::parse_lenient(None), v("0"));
    }

    #[test]
    fn spellings_normalise() {
        assert_eq!(v("1.0a1"), v("1.0.alpha.1"));
        assert_eq!(v("1.0b2"), v("1.0-beta2"));
        assert_eq!(v("1.0c1"), v("1.0rc1"));
        assert_eq!(v("1.0preview1"), v("1.0rc1"));
        assert_eq!(v("1.0-1"), v("1.0.post1"));
        assert_eq!(v("1.0rev1"), v("1.0post1"));
        assert_eq!(v("1.0r"), v("1.0post0"));
        assert_eq!(v("1.0.dev"), v("1.0dev0"));
        assert_eq!(v("1.0"), v("1.0.0.0"));
        assert_eq!(v("01.002"), v("1.2"));
        assert_eq!(v("V1.0RC1"), v("1.0rc1"));
        assert_eq!(v("0!1.0"), v("1.0"));
        assert_eq!(v("1.0+ABC.1"), v("1.0+abc-1"));
        assert!(v("1.0-1").post.is_some());
    }

    #[test]
    fn rejects_what_packaging_rejects() {
        for bad in [
            "",
            " ",
            "1.",
            ".1",
            "1..0",
            "a1.0",
            "1.0-",
            "1.0+",
            "1.0+a..b",
            "1.0.x",
            "1.0 1",
            "17.5.0-pre-ee",
            "vv1",
            "1.0-beta.1.2",
            "١.٢",
        ] {
            assert!(
                Pep440Version::parse(bad).is_none(),
                "{bad:?} should be invalid"
            );
        }
    }

    #[test]
    fn full_ordering_of_the_pep440_example() {
        // From PEP 440's "summary of permitted suffixes and relative ordering".
        let ordered = [
            "1.dev0",
            "1.0.dev456",
            "1.0a1",
            "1.0a2.dev456",
            "1.0a12.dev456",
            "1.0a12",
            "1.0b1.dev456",
            "1.0b2",
            "1.0b2.post345.dev456",
            "1.0b2.post345",
            "1.0rc1.dev456",
            "1.0rc1",
            "1.0",
            "1.0+abc.5",
            "1.0+abc.7",
            "1.0+5",
            "1.0.post456.dev34",
            "1.0.post456",
            "1.0.15",
            "1.1.dev1",
        ];
        for pair in ordered.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn epochs_and_huge_numbers() {
        assert!(v("1!0.1") > v("99999.0"));
        assert!(v("18446744073709551616.0") > v("18446744073709551615.0"));
        assert!(v("0.99999999999999999999999999999") > v("0.9"));
        assert!(pep440_at_least("100000000000000000000000", "6.3.0"));
    }

    #[test]
    fn prerelease_flag() {
        assert!(v("1.0rc1").is_prerelease());
        assert!(v("1.0.dev1").is_prerelease());
        assert!(!v("1.0.post1").is_prerelease());
        assert!(!v("1.0").is_prerelease());
    }

    #[test]
    fn whitespace_is_trimmed_like_python() {
        assert_eq!(v("\t1.0\n"), v("1.0"));
        assert_eq!(v("\u{1c}1.0"), v("1.0"));
        assert_eq!(v("\u{3000}1.0"), v("1.0"));
    }
}
