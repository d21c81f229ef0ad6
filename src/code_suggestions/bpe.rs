//! A compact `p50k_base` byte-level BPE encoder: the tokens `tiktoken`'s
//! `encode_ordinary` gives, from about a tenth of its memory.
//!
//! Why not `tiktoken-rs` itself: its encoder keeps the 50k-token vocabulary
//! three times over (a `HashMap<Vec<u8>, u32>`, the reverse map, and a sorted
//! `Vec<Vec<u8>>`), one small heap allocation per token in each, plus 256
//! clones of its pre-tokenizer regex. That came to ~10 MB of the gateway's
//! ~17 MB idle heap, for a table the gateway only ever reads. Here the same
//! vocabulary is one byte arena, one offset array and one open-addressed
//! table of ranks (~1 MB), and the pre-tokenizer is the `p50k_base` pattern
//! written out as a scanner over character classes instead of a backtracking
//! regex.
//!
//! Tests check every token and a wide range of texts (code, the character
//! classes where `\p{L}` and Rust's `is_alphabetic` differ, whitespace runs,
//! contractions) against `tiktoken-rs`, which stays a dev-dependency for that.
//!
//! ## The pre-tokenizer
//!
//! `p50k_base` splits text with
//! `'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s`
//! (leftmost alternative first, every quantifier greedy). [`Bpe::pieces`]
//! implements exactly that: a contraction; else an optional leading space and
//! a maximal run of letters, of numbers, or of anything else that is not
//! whitespace; else a whitespace run, which gives its last character to the
//! next piece when a non-whitespace character follows and the run is longer
//! than one. The character classes come from `regex-syntax`, the same Unicode
//! tables the regex behind `tiktoken` uses.
//!
//! ## The merge
//!
//! Each piece not in the vocabulary as a whole is merged pair by pair, the
//! lowest-ranked adjacent pair first (leftmost on ties): `tiktoken`'s
//! algorithm, with its heap-based variant for pieces of 100 bytes or more.
//!
//! The vocabulary file (`p50k_base.tiktoken`, base64 token and rank per line)
//! is OpenAI's, as shipped by `tiktoken` and `tiktoken-rs` (MIT).

use std::collections::BinaryHeap;

use base64::Engine as _;
use regex_syntax::hir::{Class, HirKind};

/// The vocabulary file, compiled in.
const P50K_BASE: &str = include_str!("p50k_base.tiktoken");

/// A token's rank (its id).
pub type Rank = u32;

/// Why the vocabulary could not be built (a broken build, never input).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("vocabulary line {0} is malformed")]
    Line(usize),
    #[error("vocabulary lacks the single byte {0:#04x}")]
    MissingByte(u8),
    #[error("character class {0}: {1}")]
    Class(&'static str, String),
}

/// The `p50k_base` encoder.
pub struct Bpe {
    /// Every token's bytes back to back, in rank order.
    bytes: Box<[u8]>,
    /// Token `r` is `bytes[starts[r]..starts[r + 1]]`; a rank the file skips
    /// (50256, the special `<|endoftext|>`) is empty.
    starts: Box<[u32]>,
    /// Open addressing with linear probing: `rank + 1` of the token whose bytes
    /// hash to the slot, 0 for an empty slot. At most half full.
    slots: Box<[u32]>,
    classes: Classes,
}

impl Bpe {
    /// Builds the encoder from the compiled-in `p50k_base` vocabulary.
    pub fn p50k_base() -> Result<Bpe, BuildError> {
        Bpe::from_tiktoken_file(P50K_BASE)
    }

    fn from_tiktoken_file(file: &str) -> Result<Bpe, BuildError> {
        let mut entries: Vec<(Rank, u32, u32)> = Vec::with_capacity(50_281);
        let mut bytes: Vec<u8> = Vec::with_capacity(file.len() / 2);
        let mut buf = Vec::with_capacity(64);
        for (n, line) in file.lines().enumerate() {
            let (b64, rank) = line.split_once(' ').ok_or(BuildError::Line(n + 1))?;
            let rank: Rank = rank.parse().map_err(|_| BuildError::Line(n + 1))?;
            buf.clear();
            base64::engine::general_purpose::STANDARD
                .decode_vec(b64, &mut buf)
                .map_err(|_| BuildError::Line(n + 1))?;
            let start = bytes.len() as u32;
            bytes.extend_from_slice(&buf);
            entries.push((rank, start, bytes.len() as u32));
        }
        let n_ranks = entries.iter().map(|e| e.0 as usize + 1).max().unwrap_or(0);
        // Ranks the file does not list get an empty span at the arena's end.
        let end = bytes.len() as u32;
        let mut spans = vec![(end, end); n_ranks];
        for &(rank, s, e) in &entries {
            spans[rank as usize] = (s, e);
        }
        // Re-lay the arena in rank order so one offset array describes it.
        let mut arena = Vec::with_capacity(bytes.len());
        let mut starts = Vec::with_capacity(n_ranks + 1);
        for &(s, e) in &spans {
            starts.push(arena.len() as u32);
            arena.extend_from_slice(bytes.get(s as usize..e as usize).unwrap_or(&[]));
        }
        starts.push(arena.len() as u32);
        drop(bytes);

        let capacity = (n_ranks * 2).next_power_of_two().max(2);
        let mut bpe = Bpe {
            bytes: arena.into_boxed_slice(),
            starts: starts.into_boxed_slice(),
            slots: vec![0; capacity].into_boxed_slice(),
            classes: Classes::new()?,
        };
        for rank in 0..n_ranks as Rank {
            if !bpe.token(rank).is_empty() {
                bpe.insert(rank);
            }
        }
        for byte in 0..=u8::MAX {
            if bpe.rank(&[byte]).is_none() {
                return Err(BuildError::MissingByte(byte));
            }
        }
        Ok(bpe)
    }

    /// The bytes of token `rank` (empty for an unknown rank).
    pub fn token(&self, rank: Rank) -> &[u8] {
        let r = rank as usize;
        match (self.starts.get(r), self.starts.get(r + 1)) {
            (Some(&s), Some(&e)) => self.bytes.get(s as usize..e as usize).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// The rank of the token whose bytes are `bytes`, if there is one.
    pub fn rank(&self, bytes: &[u8]) -> Option<Rank> {
        let mask = self.slots.len() - 1;
        let mut i = slot_of(bytes) & mask;
        loop {
            match self.slots.get(i).copied() {
                None | Some(0) => return None,
                Some(entry) => {
                    if self.token(entry - 1) == bytes {
                        return Some(entry - 1);
                    }
                }
            }
            i = (i + 1) & mask;
        }
    }

    fn insert(&mut self, rank: Rank) {
        let mask = self.slots.len() - 1;
        let mut i = slot_of(self.token(rank)) & mask;
        while let Some(slot) = self.slots.get_mut(i) {
            if *slot == 0 {
                *slot = rank + 1;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// The tokens of `text`, as `tiktoken`'s `encode_ordinary`.
    pub fn encode_ordinary(&self, text: &str) -> Vec<Rank> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        for piece in self.pieces(text) {
            let piece = piece.as_bytes();
            match self.rank(piece) {
                Some(rank) => out.push(rank),
                None => self.merge(piece, &mut out),
            }
        }
        out
    }

    /// The total byte length of `tokens` decoded.
    pub fn byte_len(&self, tokens: &[Rank]) -> usize {
        tokens.iter().map(|&t| self.token(t).len()).sum()
    }

    /// The pre-tokenizer's pieces of `text`, in order; they tile it.
    pub fn pieces<'t>(&'t self, text: &'t str) -> impl Iterator<Item = &'t str> + 't {
        let mut start = 0;
        std::iter::from_fn(move || {
            let rest = text.get(start..).filter(|r| !r.is_empty())?;
            let len = self.classes.piece_len(rest);
            start += len;
            rest.get(..len)
        })
    }

    /// Pushes the ranks `piece` merges into; every byte is a token, so any
    /// span the merge leaves is one too.
    fn merge(&self, piece: &[u8], out: &mut Vec<Rank>) {
        if piece.len() < 100 {
            self.merge_small(piece, out)
        } else {
            self.merge_large(piece, out)
        }
    }

    fn rank_or_max(&self, bytes: &[u8]) -> Rank {
        self.rank(bytes).unwrap_or(Rank::MAX)
    }

    /// Pushes the rank of a span the merge produced (in the vocabulary by
    /// construction; its bytes one by one if that were ever not so).
    fn push_span(&self, span: &[u8], out: &mut Vec<Rank>) {
        match self.rank(span) {
            Some(rank) => out.push(rank),
            None => out.extend(
                span.iter()
                    .filter_map(|b| self.rank(std::slice::from_ref(b))),
            ),
        }
    }

    /// `tiktoken`'s `_byte_pair_merge`: O(n·m), fastest for short pieces.
    fn merge_small(&self, piece: &[u8], out: &mut Vec<Rank>) {
        if piece.len() < 2 {
            self.push_span(piece, out);
            return;
        }
        // (start of part, rank of the pair starting there)
        let mut parts: Vec<(usize, Rank)> = Vec::with_capacity(piece.len() + 1);
        let mut min = (Rank::MAX, usize::MAX);
        for i in 0..piece.len() - 1 {
            let rank = self.rank_or_max(&piece[i..i + 2]);
            if rank < min.0 {
                min = (rank, i);
            }
            parts.push((i, rank));
        }
        parts.push((piece.len() - 1, Rank::MAX));
        parts.push((piece.len(), Rank::MAX));

        // The rank of parts[i] merged with parts[i + 1] and parts[i + 2]'s
        // start (parts[i + 1] is about to be removed).
        let rank_after = |parts: &[(usize, Rank)], i: usize| -> Rank {
            if i + 3 < parts.len() {
                self.rank_or_max(&piece[parts[i].0..parts[i + 3].0])
            } else {
                Rank::MAX
            }
        };
        while min.0 != Rank::MAX {
            let i = min.1;
            if i > 0 {
                parts[i - 1].1 = rank_after(&parts, i - 1);
            }
            parts[i].1 = rank_after(&parts, i);
            parts.remove(i + 1);
            min = (Rank::MAX, usize::MAX);
            for (j, &(_, rank)) in parts[..parts.len() - 1].iter().enumerate() {
                if rank < min.0 {
                    min = (rank, j);
                }
            }
        }
        for pair in parts.windows(2) {
            self.push_span(&piece[pair[0].0..pair[1].0], out);
        }
    }

    /// `tiktoken`'s `_byte_pair_merge_large`: a heap of candidate merges,
    /// O(m log n), for long pieces.
    fn merge_large(&self, piece: &[u8], out: &mut Vec<Rank>) {
        struct Part {
            prev: usize,
            end: usize,
            next_end: usize,
            next_rank: Rank,
        }
        let mut state: Vec<Part> = Vec::with_capacity(piece.len());
        state.push(Part {
            prev: usize::MAX,
            end: 1,
            next_end: 2,
            next_rank: Rank::MAX,
        });
        let mut heap: BinaryHeap<Merge> = BinaryHeap::with_capacity(piece.len());
        for i in 0..piece.len() - 1 {
            if let Some(rank) = self.rank(&piece[i..i + 2]) {
                heap.push(Merge { start: i, rank });
                state[i].next_rank = rank;
            }
            state.push(Part {
                prev: i,
                end: i + 2,
                next_end: i + 3,
                next_rank: Rank::MAX,
            });
        }
        let potential =
            |state: &mut Vec<Part>, heap: &mut BinaryHeap<Merge>, start: usize, next_end: usize| {
                state[start].next_end = next_end;
                state[start].next_rank = Rank::MAX;
                if next_end <= piece.len() {
                    if let Some(rank) = self.rank(&piece[start..next_end]) {
                        heap.push(Merge { start, rank });
                        state[start].next_rank = rank;
                    }
                }
            };
        while let Some(left) = heap.pop() {
            if left.rank != state[left.start].next_rank {
                continue; // invalidated by an earlier merge
            }
            let left_start = left.start;
            let right_start = state[left_start].end;
            let right_end = state[left_start].next_end;
            let right_next_end = state[right_start].next_end;
            state[left_start].end = right_end;
            potential(&mut state, &mut heap, left_start, right_next_end);
            if right_end < state.len() {
                state[right_end].prev = left_start;
            }
            if left_start > 0 {
                let prev_start = state[left_start].prev;
                potential(&mut state, &mut heap, prev_start, right_end);
            }
            state[right_start].next_rank = Rank::MAX;
        }
        let mut i = 0;
        while i < state.len() {
            let end = state[i].end;
            self.push_span(&piece[i..end], out);
            i = end;
        }
    }
}

/// A candidate merge on the heap: lowest rank first, then leftmost.
#[derive(PartialEq, Eq)]
struct Merge {
    start: usize,
    rank: Rank,
}

impl Ord for Merge {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .rank
            .cmp(&self.rank)
            .then_with(|| other.start.cmp(&self.start))
    }
}

impl PartialOrd for Merge {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A multiplicative hash over 8-byte words; tokens are short and the table
/// is fixed, so nothing fancier pays.
fn slot_of(bytes: &[u8]) -> usize {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    (h ^ (h >> 32)) as usize
}

/// The pattern's character classes. `\p{L}`, `\p{N}` and `\s` are disjoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CharClass {
    Letter,
    Number,
    Space,
    Other,
}

struct Classes {
    ascii: [CharClass; 128],
    letter: Vec<(char, char)>,
    number: Vec<(char, char)>,
    space: Vec<(char, char)>,
}

impl Classes {
    fn new() -> Result<Classes, BuildError> {
        let letter = class_ranges(r"\p{L}")?;
        let number = class_ranges(r"\p{N}")?;
        let space = class_ranges(r"\s")?;
        let mut classes = Classes {
            ascii: [CharClass::Other; 128],
            letter,
            number,
            space,
        };
        for b in 0..128u8 {
            classes.ascii[b as usize] = classes.lookup(b as char);
        }
        Ok(classes)
    }

    fn lookup(&self, c: char) -> CharClass {
        let within = |ranges: &[(char, char)]| {
            ranges
                .binary_search_by(|&(lo, hi)| {
                    if hi < c {
                        std::cmp::Ordering::Less
                    } else if lo > c {
                        std::cmp::Ordering::Greater
                    } else {
                        std::cmp::Ordering::Equal
                    }
                })
                .is_ok()
        };
        if within(&self.letter) {
            CharClass::Letter
        } else if within(&self.number) {
            CharClass::Number
        } else if within(&self.space) {
            CharClass::Space
        } else {
            CharClass::Other
        }
    }

    fn of(&self, c: char) -> CharClass {
        match self.ascii.get(c as usize) {
            Some(&class) => class,
            None => self.lookup(c),
        }
    }

    /// The byte length of the first piece of `rest` (non-empty).
    fn piece_len(&self, rest: &str) -> usize {
        let mut chars = rest.chars();
        let Some(first) = chars.next() else {
            return 0;
        };
        // '(?:[sdmt]|ll|ve|re)
        if first == '\'' {
            let after = rest.as_bytes().get(1..).unwrap_or(&[]);
            match after {
                [b's' | b'd' | b'm' | b't', ..] => return 2,
                [b'l', b'l', ..] | [b'v', b'e', ..] | [b'r', b'e', ..] => return 3,
                _ => {}
            }
        }
        // ` ?\p{L}++`, ` ?\p{N}++`, ` ?[^\s\p{L}\p{N}]++`
        let (lead, body) = if first == ' ' {
            match chars.next() {
                Some(next) if self.of(next) != CharClass::Space => (1, next),
                _ => (0, first),
            }
        } else {
            (0, first)
        };
        let class = self.of(body);
        if class != CharClass::Space {
            let run = self.run_len(&rest[lead..], class);
            return lead + run;
        }
        // `\s++$`, `\s+(?!\S)`, `\s`
        let run = self.run_len(rest, CharClass::Space);
        if run == rest.len() {
            return run;
        }
        let last = rest[..run].chars().next_back().map_or(0, char::len_utf8);
        if run > last {
            run - last
        } else {
            run
        }
    }

    /// The byte length of the run of `class` characters `text` starts with.
    fn run_len(&self, text: &str, class: CharClass) -> usize {
        text.char_indices()
            .find(|&(_, c)| self.of(c) != class)
            .map_or(text.len(), |(i, _)| i)
    }
}

/// The code point ranges of a one-class regex, from `regex-syntax`.
fn class_ranges(pattern: &'static str) -> Result<Vec<(char, char)>, BuildError> {
    let hir = regex_syntax::Parser::new()
        .parse(pattern)
        .map_err(|e| BuildError::Class(pattern, e.to_string()))?;
    match hir.kind() {
        HirKind::Class(Class::Unicode(class)) => Ok(class
            .ranges()
            .iter()
            .map(|r| (r.start(), r.end()))
            .collect()),
        other => Err(BuildError::Class(
            pattern,
            format!("not a class: {other:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn ours() -> &'static Bpe {
        static B: OnceLock<Bpe> = OnceLock::new();
        B.get_or_init(|| match Bpe::p50k_base() {
            Ok(b) => b,
            Err(e) => panic!("p50k_base: {e}"),
        })
    }

    fn reference() -> &'static tiktoken_rs::CoreBPE {
        static B: OnceLock<tiktoken_rs::CoreBPE> = OnceLock::new();
        B.get_or_init(|| match tiktoken_rs::p50k_base() {
            Ok(b) => b,
            Err(e) => panic!("p50k_base: {e}"),
        })
    }

    fn same_as_tiktoken(text: &str) {
        assert_eq!(
            ours().encode_ordinary(text),
            reference().encode_ordinary(text),
            "text: {text:?}"
        );
    }

    #[test]
    fn every_token_decodes_as_in_tiktoken_and_encodes_to_itself() {
        let bpe = ours();
        let mut checked = 0;
        for rank in (0..50_281u32).filter(|&r| r != 50_256) {
            // 50256 is `<|endoftext|>`, a special token tiktoken also decodes.
            let Ok(bytes) = reference().decode_bytes(&[rank]) else {
                assert!(bpe.token(rank).is_empty(), "rank {rank}");
                continue;
            };
            assert_eq!(bpe.token(rank), bytes.as_slice(), "rank {rank}");
            assert_eq!(bpe.rank(&bytes), Some(rank), "rank {rank}");
            checked += 1;
        }
        assert_eq!(checked, 50_280);
        assert!(bpe.token(50_256).is_empty());
        assert_eq!(bpe.rank(b"<|endoftext|>"), None);
        assert_eq!(bpe.rank(b"no such token \xff"), None);
    }

    #[test]
    fn matches_tiktoken_on_code_and_prose() {
        for text in [
            "",
            "hello world",
            "def hello_world():\n    print('hi')\n",
            "    \n\n\t  x  \n",
            "I'll say it's 'quoted' - don't'''s 'LL 've",
            "a  b   c\u{3000}\u{3000}d\u{a0}e\u{2028}f\r\n",
            "x = 3.14e-10; y = 0x1F_ff; z = ١٢٣ + ² + Ⅻ",
            "Größe naïve café 日本語のコメント 🦀🦀 ÷×",
            "नमस्ते दुनिया ி ു ͅ é",
            "trailing spaces   ",
            " leading",
            "\n",
            " ",
            "'",
            "'s",
        ] {
            same_as_tiktoken(text);
        }
    }

    #[test]
    fn long_pieces_take_the_heap_merge_and_match() {
        for text in [
            "a".repeat(4096),
            "ab".repeat(700),
            "é".repeat(300),
            "🦀".repeat(80),
            "xyz".repeat(150) + "123".repeat(100).as_str(),
            " ".repeat(500) + "y",
            "-=".repeat(300),
        ] {
            same_as_tiktoken(&text);
        }
    }

    #[test]
    fn pieces_tile_the_text() {
        let text = "  let x = y's; \t\n\n  // ok ١٢ Ⅻ ";
        let joined: String = ours().pieces(text).collect();
        assert_eq!(joined, text);
        assert!(ours().pieces(text).all(|p| !p.is_empty()));
    }

    /// Characters from every class the pattern separates, and the ones where
    /// Unicode properties and Rust's `char` methods part ways.
    fn alphabet() -> Vec<char> {
        let mut chars: Vec<char> = "aZs'tdmlvre09 _-.,;:(){}\"\\/#*".chars().collect();
        chars.extend([
            '\t', '\n', '\r', '\u{b}', '\u{c}', '\u{85}', '\u{a0}', '\u{1680}', '\u{2000}',
            '\u{2028}', '\u{2029}', '\u{202f}', '\u{3000}', '\u{200b}', '\u{feff}', 'é', 'ß', 'Ω',
            'ж', 'ع', 'न', 'ि', '\u{301}', '\u{345}', 'ा', 'ǅ', 'ʰ', '日', 'の', '١', '²', '½',
            'Ⅻ', 'ⅰ', '〇', '🦀', '€', '¿', '·',
        ]);
        chars
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn matches_tiktoken_on_any_mix(
            picks in proptest::collection::vec(0usize..1000, 0..80)
        ) {
            let alphabet = alphabet();
            let text: String = picks.iter().map(|&i| alphabet[i % alphabet.len()]).collect();
            prop_assert_eq!(
                ours().encode_ordinary(&text),
                reference().encode_ordinary(&text),
                "text: {:?}", text
            );
        }

        #[test]
        fn matches_tiktoken_on_arbitrary_strings(text in "\\PC{0,60}") {
            prop_assert_eq!(
                ours().encode_ordinary(&text),
                reference().encode_ordinary(&text),
                "text: {:?}", text
            );
        }
    }
}
