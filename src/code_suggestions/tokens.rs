//! Token counting and token-budget truncation (spec 5.2).
//!
//! The original counts and truncates with the HuggingFace tokenizer of
//! `Salesforce/codegen2-16B`, downloaded at image build time. This port cannot
//! fetch anything at run time, so it uses OpenAI's `p50k_base` byte-level BPE,
//! compiled in ([`super::bpe`]): the same GPT-2 family (GPT-2
//! pre-tokenizer, ~50k byte-level merges) with the extra whitespace-run tokens
//! code models have, so counts of code are close to, but not exactly, the
//! original's. Text is encoded as ordinary text: a literal `<|endoftext|>` in a
//! file is counted as the characters it is made of.
//!
//! The encoder is built once per process ([`OnceLock`]); building it parses
//! the 50k-entry rank file, which takes a few milliseconds.
//!
//! ## Segmenting, for speed and safety
//!
//! Text is never encoded in one piece. It is cut into segments of roughly
//! [`SEGMENT_BYTES`] at places where the BPE pre-tokenizer would split anyway:
//! a whitespace character after a non-whitespace one, or a change between
//! ASCII letters, ASCII digits and ASCII punctuation. No pre-token of the
//! `p50k_base` pattern can straddle such a place, and the pattern has no
//! look-behind and no look-ahead past a non-whitespace character, so encoding
//! the segments one by one gives exactly the tokens of encoding the whole text.
//!
//! That buys two things. Truncation encodes only as much as it needs: keeping
//! the last 2 000 tokens of a 100 000-character prefix encodes the last few
//! segments, not the whole file. And no single pre-token can grow without
//! bound: a run with no such cut place (a long run of one character class,
//! CJK text without spaces, a minified blob) is cut hard after
//! [`MAX_RUN_BYTES`], which keeps the pre-tokenizer and the BPE merge loop on
//! small inputs whatever the client sends (the BPE merge of one pre-token is
//! superlinear in its length). A hard cut can change the
//! tokens next to it by a token or so; ordinary source code never has one.
//!
//! ## Never panics
//!
//! Cuts are made on byte offsets derived from token byte lengths, then moved
//! to a UTF-8 character boundary (a token may end inside a multi-byte
//! character): towards the kept side's inside, so a partial character is
//! dropped rather than kept, and the token that carried it is not counted.

use std::sync::OnceLock;

use super::bpe::Bpe;

/// Soft segment size: a segment ends at the first safe cut place after this
/// many bytes.
pub const SEGMENT_BYTES: usize = 2048;

/// Longest stretch without a safe cut place before a hard cut.
pub const MAX_RUN_BYTES: usize = 4096;

/// A truncated text and the number of tokens it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncated {
    /// The kept text: a suffix (keep-end) or prefix (keep-start) of the input.
    pub text: String,
    /// Tokens of the input that lie wholly inside `text` (≤ the budget).
    pub tokens: usize,
}

/// What the algorithms need from a tokenizer; a trait so the (unreachable in
/// practice) fallback for a failed encoder build is testable too.
trait Backend {
    fn encode(&self, text: &str) -> Vec<u32>;
    /// The byte length of the text the tokens decode to.
    fn byte_len(&self, tokens: &[u32]) -> usize;
}

impl Backend for Bpe {
    fn encode(&self, text: &str) -> Vec<u32> {
        self.encode_ordinary(text)
    }

    fn byte_len(&self, tokens: &[u32]) -> usize {
        Bpe::byte_len(self, tokens)
    }
}

/// One token per character, used only if the shipped BPE failed to build.
/// Each "token" is the character's UTF-8 length, so byte lengths are exact.
struct CharFallback;

impl Backend for CharFallback {
    fn encode(&self, text: &str) -> Vec<u32> {
        text.chars().map(|c| c.len_utf8() as u32).collect()
    }

    fn byte_len(&self, tokens: &[u32]) -> usize {
        tokens.iter().map(|t| *t as usize).sum()
    }
}

fn shared_bpe() -> Option<&'static Bpe> {
    static BPE: OnceLock<Option<Bpe>> = OnceLock::new();
    BPE.get_or_init(|| Bpe::p50k_base().ok()).as_ref()
}

fn backend() -> &'static dyn Backend {
    match shared_bpe() {
        Some(bpe) => bpe,
        None => &CharFallback,
    }
}

/// Builds the shared encoder now (e.g. at startup) instead of on the first
/// request. Returns whether the real BPE is in use (false: it failed to build
/// and the one-token-per-character fallback counts instead).
pub fn warm_up() -> bool {
    shared_bpe().is_some()
}

/// The number of tokens of `text`.
pub fn count(text: &str) -> usize {
    count_with(backend(), text)
}

/// The last `max_tokens` tokens of `text` (drops from the left).
pub fn truncate_keep_end(text: &str, max_tokens: usize) -> String {
    truncate_keep_end_counted(text, max_tokens).text
}

/// The first `max_tokens` tokens of `text` (drops from the right).
pub fn truncate_keep_start(text: &str, max_tokens: usize) -> String {
    truncate_keep_start_counted(text, max_tokens).text
}

/// [`truncate_keep_end`] with the number of kept tokens, as the original's
/// `truncate_content(..., truncation_side="left")` reports it.
pub fn truncate_keep_end_counted(text: &str, max_tokens: usize) -> Truncated {
    keep_end_with(backend(), text, max_tokens)
}

/// [`truncate_keep_start`] with the number of kept tokens, as the original's
/// `truncate_content(..., truncation_side="right")` reports it.
pub fn truncate_keep_start_counted(text: &str, max_tokens: usize) -> Truncated {
    keep_start_with(backend(), text, max_tokens)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CharClass {
    Space,
    Letter,
    Digit,
    Punct,
    Other,
}

fn char_class(c: char) -> CharClass {
    if c.is_whitespace() {
        // Rust's `is_whitespace` is Unicode `White_Space`, the regex `\s`.
        CharClass::Space
    } else if c.is_ascii_alphabetic() {
        CharClass::Letter
    } else if c.is_ascii_digit() {
        CharClass::Digit
    } else if c.is_ascii() {
        CharClass::Punct
    } else {
        CharClass::Other
    }
}

/// Whether no `p50k_base` pre-token can contain `prev` immediately followed
/// by `next` (see the module docs).
fn is_split_point(prev: CharClass, next: CharClass) -> bool {
    use CharClass::*;
    matches!(
        (prev, next),
        (Letter | Digit | Punct | Other, Space)
            | (Letter, Digit | Punct)
            | (Digit, Letter | Punct)
            | (Punct, Digit)
    )
}

/// Byte ranges that tile `text`, cut as described in the module docs.
fn segments(text: &str) -> Vec<(usize, usize)> {
    segments_with(text, SEGMENT_BYTES, MAX_RUN_BYTES)
}

/// [`segments`] with explicit sizes (tests cut at every split point).
fn segments_with(text: &str, segment_bytes: usize, max_run_bytes: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(text.len() / segment_bytes.max(1) + 1);
    let mut seg_start = 0;
    let mut since_split = 0;
    let mut prev: Option<CharClass> = None;
    for (i, c) in text.char_indices() {
        let class = char_class(c);
        if let Some(p) = prev {
            if is_split_point(p, class) {
                since_split = i;
                if i - seg_start >= segment_bytes {
                    out.push((seg_start, i));
                    seg_start = i;
                }
            } else if i - since_split.max(seg_start) >= max_run_bytes {
                out.push((seg_start, i));
                seg_start = i;
            }
        }
        prev = Some(class);
    }
    if seg_start < text.len() || out.is_empty() {
        out.push((seg_start, text.len()));
    }
    out
}

fn segment_text(text: &str, (start, end): (usize, usize)) -> &str {
    text.get(start..end).unwrap_or("")
}

fn count_with(backend: &dyn Backend, text: &str) -> usize {
    segments(text)
        .into_iter()
        .map(|seg| backend.encode(segment_text(text, seg)).len())
        .sum()
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    if index >= text.len() {
        return text.len();
    }
    while index > 0 && !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

fn ceil_char_boundary(text: &str, mut index: usize) -> usize {
    while index < text.len() && !text.is_char_boundary(index) {
        index += 1;
    }
    index.min(text.len())
}

fn keep_end_with(backend: &dyn Backend, text: &str, max_tokens: usize) -> Truncated {
    if max_tokens == 0 || text.is_empty() {
        return Truncated {
            text: String::new(),
            tokens: 0,
        };
    }
    let mut total = 0usize;
    for &(start, end) in segments(text).iter().rev() {
        let toks = backend.encode(segment_text(text, (start, end)));
        if total + toks.len() <= max_tokens {
            total += toks.len();
            continue;
        }
        // Keep the last `want` tokens of this segment.
        let want = max_tokens - total;
        let drop = toks.len() - want;
        let cut = start + backend.byte_len(toks.get(..drop).unwrap_or(&[]));
        let boundary = ceil_char_boundary(text, cut);
        // Tokens that started before the boundary (they carry a partial
        // character that is dropped) are not counted.
        let mut kept = want;
        let mut pos = cut;
        for tok in toks.get(drop..).unwrap_or(&[]) {
            if pos >= boundary {
                break;
            }
            pos += backend.byte_len(std::slice::from_ref(tok));
            kept -= 1;
        }
        return Truncated {
            text: text.get(boundary..).unwrap_or("").to_owned(),
            tokens: total + kept,
        };
    }
    Truncated {
        text: text.to_owned(),
        tokens: total,
    }
}

fn keep_start_with(backend: &dyn Backend, text: &str, max_tokens: usize) -> Truncated {
    if max_tokens == 0 || text.is_empty() {
        return Truncated {
            text: String::new(),
            tokens: 0,
        };
    }
    let mut total = 0usize;
    for &(start, end) in &segments(text) {
        let toks = backend.encode(segment_text(text, (start, end)));
        if total + toks.len() <= max_tokens {
            total += toks.len();
            continue;
        }
        // Keep the first `want` tokens of this segment.
        let want = max_tokens - total;
        let kept_toks = toks.get(..want).unwrap_or(&[]);
        let cut = start + backend.byte_len(kept_toks);
        let boundary = floor_char_boundary(text, cut);
        // Tokens that end after the boundary are not counted.
        let mut kept = want;
        let mut pos = cut;
        for tok in kept_toks.iter().rev() {
            if pos <= boundary {
                break;
            }
            pos = pos.saturating_sub(backend.byte_len(std::slice::from_ref(tok)));
            kept -= 1;
        }
        return Truncated {
            text: text.get(..boundary).unwrap_or("").to_owned(),
            tokens: total + kept,
        };
    }
    Truncated {
        text: text.to_owned(),
        tokens: total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference encoder: segmenting must give exactly its tokens.
    fn bpe() -> &'static tiktoken_rs::CoreBPE {
        static B: OnceLock<tiktoken_rs::CoreBPE> = OnceLock::new();
        B.get_or_init(|| match tiktoken_rs::p50k_base() {
            Ok(b) => b,
            Err(e) => panic!("p50k_base: {e}"),
        })
    }

    fn whole(text: &str) -> Vec<u32> {
        bpe().encode_ordinary(text)
    }

    fn segmented(text: &str) -> Vec<u32> {
        segments(text)
            .into_iter()
            .flat_map(|seg| bpe().encode_ordinary(segment_text(text, seg)))
            .collect()
    }

    fn sample_code() -> String {
        let unit = "import os\nfrom typing import Optional\n\n\
            def handler(request: dict, retries: int = 3) -> Optional[str]:\n    \
            \"\"\"Handle it; don't panic.\"\"\"\n    for i in range(retries):\n        \
            if request.get('x%d' % i) != None:  # it's 42\n            \
            return f\"{i:>4}\\t{request!r}\"\n    return None\n\n\
            class Größe:\n    wert = 3.14e-10  # 日本語のコメント\n    emoji = \"🦀🦀\"\n\n";
        unit.repeat(60)
    }

    #[test]
    fn warm_up_reports_the_real_bpe() {
        assert!(warm_up());
        assert!(count("hello world") == 2);
    }

    #[test]
    fn segmentation_is_exact_on_code() {
        let code = sample_code();
        assert!(code.len() > 4 * SEGMENT_BYTES);
        assert!(segments(&code).len() > 3);
        assert_eq!(segmented(&code), whole(&code));
        assert_eq!(count(&code), whole(&code).len());
    }

    #[test]
    fn segmentation_is_exact_on_tricky_boundaries() {
        let mut text = String::new();
        for i in 0..3000 {
            text.push_str(match i % 9 {
                0 => "word",
                1 => "  \n\t ",
                2 => "123",
                3 => "'ll",
                4 => "((",
                5 => "ünïcödé",
                6 => " ",
                7 => "x9y",
                _ => "\n\n\n",
            });
        }
        assert!(segments(&text).len() > 3);
        assert_eq!(segmented(&text), whole(&text));
    }

    #[test]
    fn segments_tile_the_text() {
        for text in ["", "a", "a b", &sample_code(), &"x".repeat(20_000)] {
            let segs = segments(text);
            assert!(!segs.is_empty());
            assert_eq!(segs.first().map(|s| s.0), Some(0));
            assert_eq!(segs.last().map(|s| s.1), Some(text.len()));
            for pair in segs.windows(2) {
                assert_eq!(pair[0].1, pair[1].0);
            }
            for seg in segs {
                assert!(text.is_char_boundary(seg.0) && text.is_char_boundary(seg.1));
            }
        }
    }

    #[test]
    fn long_runs_are_cut_hard() {
        let run = "é".repeat(10_000);
        let segs = segments(&run);
        assert!(segs.len() >= 4, "{segs:?}");
        for (s, e) in segs {
            assert!(e - s <= MAX_RUN_BYTES + 4);
        }
    }

    #[test]
    fn count_basics() {
        assert_eq!(count(""), 0);
        assert_eq!(count("hello"), 1);
        assert_eq!(count("hello world"), 2);
        // p50k_base has whitespace-run tokens (code indentation is cheap).
        assert!(count("        return x") <= 3);
        assert!(count("🦀") >= 1);
        assert_eq!(count("<|endoftext|>"), whole("<|endoftext|>").len());
        assert!(count("<|endoftext|>") > 1);
    }

    #[test]
    fn truncation_within_budget_returns_input() {
        let t = truncate_keep_end_counted("hello world", 5);
        assert_eq!(t.text, "hello world");
        assert_eq!(t.tokens, 2);
        let t = truncate_keep_start_counted("hello world", 2);
        assert_eq!(t.text, "hello world");
        assert_eq!(t.tokens, 2);
    }

    #[test]
    fn truncation_to_zero_and_empty() {
        assert_eq!(truncate_keep_end("hello", 0), "");
        assert_eq!(truncate_keep_start("hello", 0), "");
        assert_eq!(truncate_keep_end("", 10), "");
        assert_eq!(truncate_keep_start("", 10), "");
        assert_eq!(truncate_keep_end_counted("", 10).tokens, 0);
    }

    #[test]
    fn keep_end_drops_from_the_left() {
        let t = truncate_keep_end_counted("hello world foo bar", 2);
        assert_eq!(t.text, " foo bar");
        assert_eq!(t.tokens, 2);
    }

    #[test]
    fn keep_start_drops_from_the_right() {
        let t = truncate_keep_start_counted("hello world foo bar", 2);
        assert_eq!(t.text, "hello world");
        assert_eq!(t.tokens, 2);
    }

    #[test]
    fn truncation_matches_token_slicing_on_code() {
        let code = sample_code();
        let toks = whole(&code);
        for budget in [1usize, 7, 100, 1000, 1905, toks.len() - 1] {
            let end = truncate_keep_end_counted(&code, budget);
            let start = truncate_keep_start_counted(&code, budget);
            assert!(end.tokens <= budget && start.tokens <= budget);
            assert!(code.ends_with(&end.text));
            assert!(code.starts_with(&start.text));
            // Where no multi-byte character is split the result is exactly
            // the decoded token slice.
            let tail = bpe()
                .decode_bytes(&toks[toks.len() - budget..])
                .unwrap_or_default();
            if let Ok(tail) = String::from_utf8(tail) {
                assert_eq!(end.text, tail, "keep_end {budget}");
                assert_eq!(end.tokens, budget);
            }
            let head = bpe().decode_bytes(&toks[..budget]).unwrap_or_default();
            if let Ok(head) = String::from_utf8(head) {
                assert_eq!(start.text, head, "keep_start {budget}");
                assert_eq!(start.tokens, budget);
            }
        }
    }

    #[test]
    fn multibyte_cuts_land_on_char_boundaries() {
        // Rare CJK and emoji characters are split across byte tokens.
        let text = "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🦀🦀🦀 龘靐齉爩 ".repeat(50);
        let n = count(&text);
        for budget in 0..n.min(200) {
            let end = truncate_keep_end_counted(&text, budget);
            let start = truncate_keep_start_counted(&text, budget);
            assert!(text.ends_with(&end.text));
            assert!(text.starts_with(&start.text));
            assert!(end.tokens <= budget && start.tokens <= budget);
        }
    }

    #[test]
    fn huge_inputs() {
        let big = sample_code().repeat(25);
        assert!(big.len() > 500_000);
        let t = truncate_keep_end_counted(&big, 1905);
        assert_eq!(t.tokens, 1905);
        assert!(big.ends_with(&t.text));
        let t = truncate_keep_start_counted(&big, 143);
        assert_eq!(t.tokens, 143);
        assert!(big.starts_with(&t.text));
        let carets = "^".repeat(1_000_000);
        assert!(count(&carets) > 1000);
        let spaces = count(&" ".repeat(300_000));
        assert!(spaces > 0 && spaces < 300_000);
        let t = truncate_keep_end_counted(&carets, 10);
        assert_eq!(t.tokens, 10);
        assert!(carets.ends_with(&t.text) && !t.text.is_empty());
    }

    #[test]
    fn fallback_backend_counts_characters() {
        assert_eq!(count_with(&CharFallback, "añ🦀"), 3);
        let t = keep_end_with(&CharFallback, "añ🦀b", 2);
        assert_eq!(t.text, "🦀b");
        assert_eq!(t.tokens, 2);
        let t = keep_start_with(&CharFallback, "añ🦀b", 3);
        assert_eq!(t.text, "añ🦀");
        assert_eq!(t.tokens, 3);
    }

    #[test]
    fn char_boundary_helpers() {
        let s = "a🦀b";
        assert_eq!(floor_char_boundary(s, 3), 1);
        assert_eq!(ceil_char_boundary(s, 3), 5);
        assert_eq!(floor_char_boundary(s, 99), s.len());
        assert_eq!(ceil_char_boundary(s, 99), 99.min(s.len()));
        assert_eq!(ceil_char_boundary("", 0), 0);
    }

    /// A backend whose tokens split characters mid-way: every token is one
    /// byte, so cuts regularly land inside multi-byte characters.
    struct ByteTokens;

    impl Backend for ByteTokens {
        fn encode(&self, text: &str) -> Vec<u32> {
            text.bytes().map(u32::from).collect()
        }
        fn byte_len(&self, tokens: &[u32]) -> usize {
            tokens.len()
        }
    }

    #[test]
    fn partial_characters_are_dropped_and_not_counted() {
        // "a" + 4-byte crab + "b" = 6 byte tokens.
        let t = keep_end_with(&ByteTokens, "a🦀b", 3);
        assert_eq!(t.text, "b");
        assert_eq!(t.tokens, 1);
        let t = keep_start_with(&ByteTokens, "a🦀b", 3);
        assert_eq!(t.text, "a");
        assert_eq!(t.tokens, 1);
        let t = keep_end_with(&ByteTokens, "a🦀b", 5);
        assert_eq!(t.text, "🦀b");
        assert_eq!(t.tokens, 5);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Text rich in every character class the split rule looks at.
        fn code_like() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop_oneof![
                    Just("a".to_owned()),
                    Just("Zed".to_owned()),
                    Just("42".to_owned()),
                    Just(" ".to_owned()),
                    Just("  ".to_owned()),
                    Just("\n".to_owned()),
                    Just("\r\n".to_owned()),
                    Just("\t".to_owned()),
                    Just("'s".to_owned()),
                    Just("'ll".to_owned()),
                    Just("'".to_owned()),
                    Just("((".to_owned()),
                    Just(";".to_owned()),
                    Just("é".to_owned()),
                    Just("日本".to_owned()),
                    Just("🦀".to_owned()),
                    Just("\u{3000}".to_owned()),
                    Just("\u{85}".to_owned()),
                    Just("\u{301}".to_owned()),
                    Just("Ⅻ".to_owned()),
                    Just("\u{1c}".to_owned()),
                    any::<char>().prop_map(String::from),
                ],
                0..80,
            )
            .prop_map(|parts| parts.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// The claim the whole segmenting rests on: cutting at every
            /// split point gives exactly the tokens of the whole text.
            #[test]
            fn split_points_are_exact(text in code_like()) {
                let cut: Vec<u32> = segments_with(&text, 1, usize::MAX)
                    .into_iter()
                    .flat_map(|seg| bpe().encode_ordinary(segment_text(&text, seg)))
                    .collect();
                prop_assert_eq!(cut, whole(&text));
            }

            #[test]
            fn split_points_are_exact_on_any_string(text in any::<String>()) {
                let cut: Vec<u32> = segments_with(&text, 1, usize::MAX)
                    .into_iter()
                    .flat_map(|seg| bpe().encode_ordinary(segment_text(&text, seg)))
                    .collect();
                prop_assert_eq!(cut, whole(&text));
            }

            #[test]
            fn truncation_invariants(text in code_like(), budget in 0usize..40) {
                let n = count(&text);
                let end = truncate_keep_end_counted(&text, budget);
                let start = truncate_keep_start_counted(&text, budget);
                prop_assert!(text.ends_with(&end.text));
                prop_assert!(text.starts_with(&start.text));
                prop_assert!(end.tokens <= budget.min(n));
                prop_assert!(start.tokens <= budget.min(n));
                if budget >= n {
                    prop_assert_eq!(&end.text, &text);
                    prop_assert_eq!(&start.text, &text);
                }
                // Hard cuts and tiny segments never panic either.
                for (soft, run) in [(1, 1), (1, 3), (5, 7)] {
                    for seg in segments_with(&text, soft, run) {
                        prop_assert!(text.is_char_boundary(seg.0));
                        prop_assert!(text.is_char_boundary(seg.1));
                    }
                }
            }
        }
    }
}
