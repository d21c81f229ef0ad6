//! Post-processing of model output (spec 5.5).
//!
//! Models echo their prompt, wrap code in Markdown fences and answer with
//! nothing but whitespace; the original cleans that up before the editor sees
//! it, and clients are tuned to the cleaned form, so the same steps run here
//! in the same order:
//!
//! - [`post_process_vertex_completion`]: the legacy Vertex completion chain
//!   `remove_comment_only_completion`, `trim_by_min_allowed_context`,
//!   `fix_end_block_errors`, `clean_model_reflection`, `strip_whitespaces`,
//!   each skippable by name (`AIGW_F__CODE_SUGGESTIONS__EXCL_POST_PROC`),
//!   stopping as soon as the text is empty. The first three need tree-sitter
//!   and are no-ops in this port (the completion passes through them
//!   unchanged), so only the last two act.
//! - [`post_process_generation`]: generations from non-Anthropic models:
//!   strip Markdown fences, start on a new line, drop the echoed prefix,
//!   whitespace-only → `""`.
//! - [`post_process_anthropic_generation`]: whitespace-only → `""`, nothing else.
//! - Anthropic / LiteLLM / agent completions and all streams: no
//!   post-processing at all (nothing to call).
//!
//! Python string semantics are reproduced where they show: "whitespace" is
//! `str.isspace` (Unicode `White_Space` plus the ASCII separators
//! U+001C..U+001F), and lines are split with `str.splitlines` rules (also at
//! `\r`, `\v`, `\f`, U+001C..U+001E, U+0085, U+2028, U+2029).
//!
//! ## `clean_model_reflection`, exactly
//!
//! A model often repeats lines of its prompt after the part it was asked for.
//! The rule, with `text = context + completion`:
//!
//! 1. The completion's first line is kept as is: find the end of the current
//!    line (`context` itself if it ends in a newline followed only by spaces
//!    or tabs, else just past the first `\n` at or after the cursor). No such
//!    newline → the completion is returned unchanged.
//! 2. Split the text before and after that point into lines and match the
//!    after-lines against the before-lines (compared with surrounding
//!    whitespace stripped) with the original's LCS table: each after-line is
//!    matched to the before-line where the longest common run ending there is
//!    longest; matched after-lines whose before-lines are consecutive form a
//!    group.
//! 3. A group is dropped when it is a single line that starts (after
//!    indentation) with `/*`, `//` or `#` (a repeated comment line, e.g. the
//!    prompt's header), or when it is a *large group*: at least 5 lines whose
//!    characters (lines stripped and joined) are less than 25 % of
//!    `()[];.,$%&^*@#!{}/` and have fewer than 35 distinct characters per 100.
//!    Every other line, repeated or not, is kept.
//! 4. Conservative deviation: the original also drops a group whose matched
//!    after-lines are not consecutive, and then drops the unmatched lines
//!    between them as well. This port drops a group only if its after-lines
//!    are consecutive, so a line that does not itself repeat a prefix line is
//!    never dropped. Every completion the original leaves unchanged is
//!    unchanged here too.
//!
//! The spec's summary ("except single comment lines and large low-diversity
//! groups") reads the original's condition backwards; the rule above is what
//! its code and its tests do (a repeated header comment is removed).

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;

/// The post-processing steps of the legacy Vertex completion chain, by the
/// names `AIGW_F__CODE_SUGGESTIONS__EXCL_POST_PROC` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PostProcessOp {
    /// tree-sitter: a completion of only comments → `""` (no-op here).
    RemoveCommentOnlyCompletion,
    /// tree-sitter: cut at the end of the smallest block around the cursor (no-op here).
    TrimByMinAllowedContext,
    /// tree-sitter: drop a repeated first suffix line if that fixes syntax (no-op here).
    FixEndBlockErrors,
    /// [`clean_model_reflection`].
    CleanModelReflection,
    /// [`strip_whitespaces`].
    StripWhitespaces,
    /// [`strip_asterisks`]; defined but not part of the default chain.
    StripAsterisks,
}

impl PostProcessOp {
    /// The default legacy Vertex completion chain, in order.
    pub const VERTEX_COMPLETION_CHAIN: [PostProcessOp; 5] = [
        PostProcessOp::RemoveCommentOnlyCompletion,
        PostProcessOp::TrimByMinAllowedContext,
        PostProcessOp::FixEndBlockErrors,
        PostProcessOp::CleanModelReflection,
        PostProcessOp::StripWhitespaces,
    ];

    /// The original's name of the step.
    pub fn name(self) -> &'static str {
        match self {
            PostProcessOp::RemoveCommentOnlyCompletion => "remove_comment_only_completion",
            PostProcessOp::TrimByMinAllowedContext => "trim_by_min_allowed_context",
            PostProcessOp::FixEndBlockErrors => "fix_end_block_errors",
            PostProcessOp::CleanModelReflection => "clean_model_reflection",
            PostProcessOp::StripWhitespaces => "strip_whitespaces",
            PostProcessOp::StripAsterisks => "strip_asterisks",
        }
    }

    /// The step of a name, if there is one.
    pub fn from_name(name: &str) -> Option<PostProcessOp> {
        [
            PostProcessOp::RemoveCommentOnlyCompletion,
            PostProcessOp::TrimByMinAllowedContext,
            PostProcessOp::FixEndBlockErrors,
            PostProcessOp::CleanModelReflection,
            PostProcessOp::StripWhitespaces,
            PostProcessOp::StripAsterisks,
        ]
        .into_iter()
        .find(|op| op.name() == name)
    }

    /// Whether the step needs tree-sitter (and so does nothing in this port).
    pub fn needs_tree_sitter(self) -> bool {
        matches!(
            self,
            PostProcessOp::RemoveCommentOnlyCompletion
                | PostProcessOp::TrimByMinAllowedContext
                | PostProcessOp::FixEndBlockErrors
        )
    }

    fn apply(self, prefix: &str, completion: String) -> String {
        match self {
            PostProcessOp::RemoveCommentOnlyCompletion
            | PostProcessOp::TrimByMinAllowedContext
            | PostProcessOp::FixEndBlockErrors => completion,
            PostProcessOp::CleanModelReflection => clean_model_reflection(prefix, &completion),
            PostProcessOp::StripWhitespaces => strip_whitespaces(&completion),
            PostProcessOp::StripAsterisks => strip_asterisks(&completion),
        }
    }
}

/// Post-processes a legacy Vertex (`code-gecko`) completion. `prefix` is the
/// client's full content above the cursor (not the truncated prompt);
/// `excluded` holds step names to skip (unknown names are ignored): the
/// `f.code_suggestions.excl_post_proc` setting, i.e.
/// `AIGW_F__CODE_SUGGESTIONS__EXCL_POST_PROC`.
pub fn post_process_vertex_completion<S: AsRef<str>>(
    prefix: &str,
    completion: &str,
    excluded: &[S],
) -> String {
    let mut text = completion.to_owned();
    for op in PostProcessOp::VERTEX_COMPLETION_CHAIN {
        if excluded.iter().any(|name| name.as_ref() == op.name()) {
            continue;
        }
        text = op.apply(prefix, text);
        if text.is_empty() {
            return text;
        }
    }
    text
}

/// Post-processes a generation from a non-Anthropic model; `prefix` is the
/// client's content above the cursor.
pub fn post_process_generation(prefix: &str, completion: &str) -> String {
    let text = strip_code_block_markdown(completion);
    let text = prepend_new_line(prefix, &text);
    let text = clean_model_reflection(prefix, &text);
    strip_whitespaces(&text)
}

/// Post-processes a generation from an Anthropic model: only
/// whitespace-only → `""`.
pub fn post_process_anthropic_generation(completion: &str) -> String {
    strip_whitespaces(completion)
}

/// Python's `str.isspace` for one character.
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{1c}'..='\u{1f}')
}

/// Python's `str.strip()`.
fn py_strip(s: &str) -> &str {
    s.trim_matches(py_isspace)
}

/// Whitespace-only text → `""` (Python: `"" if text.isspace() else text`).
pub fn strip_whitespaces(text: &str) -> String {
    if !text.is_empty() && text.chars().all(py_isspace) {
        String::new()
    } else {
        text.to_owned()
    }
}

fn markdown_fence_regex() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    // `[^\s\x1c-\x1f]` is Python's `\S`.
    RE.get_or_init(|| Regex::new(r"(?m)^```[^\s\x1c-\x1f]*\n").ok())
        .as_ref()
}

/// Removes every line that opens a Markdown code fence (```` ^```\S*\n ````,
/// at the start of the text or of any line) and then any trailing backticks.
pub fn strip_code_block_markdown(text: &str) -> String {
    let stripped = match markdown_fence_regex() {
        Some(re) => re.replace_all(text, "").into_owned(),
        None => text.to_owned(),
    };
    stripped.trim_end_matches('`').to_owned()
}

/// Starts a non-empty completion on a new line unless the context already
/// ends with one or the completion starts with one.
pub fn prepend_new_line(code_context: &str, completion: &str) -> String {
    if !completion.is_empty() && !code_context.ends_with('\n') && !completion.starts_with('\n') {
        format!("\n{completion}")
    } else {
        completion.to_owned()
    }
}

/// A completion that starts (after whitespace) with a run of five or more
/// `*` → `""` (Python: `re.search(r"^\s*\*{5,}", completion)`).
pub fn strip_asterisks(completion: &str) -> String {
    let rest = completion.trim_start_matches(py_isspace);
    let stars = rest.bytes().take_while(|b| *b == b'*').count();
    if stars >= 5 {
        String::new()
    } else {
        completion.to_owned()
    }
}

/// Python's `str.splitlines(keepends=True)`.
fn py_splitlines_keepends(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut iter = s.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        let end = match c {
            '\r' => {
                if let Some((j, '\n')) = iter.peek().copied() {
                    iter.next();
                    j + 1
                } else {
                    i + 1
                }
            }
            '\n' | '\u{0b}' | '\u{0c}' | '\u{1c}' | '\u{1d}' | '\u{1e}' | '\u{85}' | '\u{2028}'
            | '\u{2029}' => i + c.len_utf8(),
            _ => continue,
        };
        out.push(s.get(start..end).unwrap_or(""));
        start = end;
    }
    if start < s.len() {
        out.push(s.get(start..).unwrap_or(""));
    }
    out
}

/// The original's `_split_code_lines`: lines without their `\n`, every line
/// but the first prefixed with `\n`, plus a lone `"\n"` if the text ends with
/// one. Joining the result gives back the text, except that a line ending in
/// another separator (e.g. a lone `\r`) gains a `\n`, as in the original.
fn split_code_lines(s: &str) -> Vec<String> {
    let parts = py_splitlines_keepends(s);
    let mut out = Vec::with_capacity(parts.len() + 1);
    for (i, line) in parts.iter().enumerate() {
        let line = line.trim_end_matches('\n');
        if i > 0 {
            out.push(format!("\n{line}"));
        } else {
            out.push(line.to_owned());
        }
    }
    if parts.last().is_some_and(|l| l.ends_with('\n')) {
        out.push("\n".to_owned());
    }
    out
}

/// The original's `find_newline_position`: `start` if the text before it ends
/// with a newline followed only by spaces/tabs, else the position just past
/// the first `\n` at or after `start`. Positions are byte offsets.
fn find_newline_position(value: &str, start: usize) -> Option<usize> {
    let before = value.get(..start)?;
    if before.trim_end_matches([' ', '\t']).ends_with('\n') {
        return Some(start);
    }
    value
        .get(start..)?
        .find('\n')
        .map(|offset| start + offset + 1)
}

/// The original's `find_common_lines`: for every target line, the source row
/// where its LCS-table column is largest (first such row); matched target
/// lines grouped while their source rows are consecutive. Returns groups of
/// `(target index, source row)`.
///
/// The table is never materialised: only rows of source lines that occur in
/// the target can hold non-zero cells, and only in the columns of equal
/// target lines, so the work is proportional to the number of equal
/// (source, target) pairs and the memory to the target length.
fn find_common_lines(source: &[&str], target: &[&str]) -> Vec<Vec<(usize, usize)>> {
    let nt = target.len();
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut columns: Vec<Vec<usize>> = Vec::new();
    for (j, line) in target.iter().enumerate() {
        let next = columns.len();
        let id = *ids.entry(line).or_insert(next);
        if id == next {
            columns.push(Vec::new());
        }
        if let Some(cols) = columns.get_mut(id) {
            cols.push(j);
        }
    }

    // Rows i-1 and i of the table, indices 0..=nt, plus their non-zero cells.
    let mut prev = vec![0u32; nt + 1];
    let mut cur = vec![0u32; nt + 1];
    let mut prev_touched: Vec<usize> = Vec::new();
    let mut cur_touched: Vec<usize> = Vec::new();
    // Per column: (max value, first row holding it).
    let mut col_max = vec![(0u32, 0usize); nt + 1];

    for (i0, line) in source.iter().enumerate() {
        let i = i0 + 1;
        cur_touched.clear();
        if let Some(cols) = ids.get(line).and_then(|id| columns.get(*id)) {
            for &j0 in cols {
                // Cell (i, j) with j = j0 + 1; its diagonal is prev[j0].
                let Some(diag) = prev.get_mut(j0) else {
                    continue;
                };
                if *diag == 1 {
                    // The original bumps the start of a run to 2 so that runs
                    // outrank single matches when taking column maxima.
                    *diag = 2;
                    if let Some(m) = col_max.get_mut(j0) {
                        if m.0 < 2 {
                            *m = (2, i - 1);
                        }
                    }
                }
                let value = *diag + 1;
                if let Some(cell) = cur.get_mut(j0 + 1) {
                    *cell = value;
                    cur_touched.push(j0 + 1);
                }
                if let Some(m) = col_max.get_mut(j0 + 1) {
                    if value > m.0 {
                        *m = (value, i);
                    }
                }
            }
        }
        for &j in &prev_touched {
            if let Some(cell) = prev.get_mut(j) {
                *cell = 0;
            }
        }
        std::mem::swap(&mut prev, &mut cur);
        std::mem::swap(&mut prev_touched, &mut cur_touched);
    }

    let mut groups: Vec<Vec<(usize, usize)>> = Vec::new();
    let mut last_row: Option<usize> = None;
    for (j, &(value, row)) in col_max.iter().enumerate().skip(1) {
        if value == 0 {
            continue;
        }
        let pair = (j - 1, row);
        match (groups.last_mut(), last_row) {
            (Some(group), Some(last)) if row == last + 1 => group.push(pair),
            _ => groups.push(vec![pair]),
        }
        last_row = Some(row);
    }
    groups
}

const COMMENT_STARTS: [&str; 3] = ["/*", "//", "#"];
const SPECIAL_CHARS: &str = "()[];.,$%&^*@#!{}/";
const MIN_BLOCK_SIZE: usize = 5;
const MIN_SPECIAL_CHARS: f64 = 0.25;
const MIN_DIVERSITY_CHARS: f64 = 0.35;

fn is_single_line_comment(lines: &[String]) -> bool {
    match lines {
        [only] => {
            let trimmed = only.trim_start_matches(py_isspace);
            COMMENT_STARTS.iter().any(|c| trimmed.starts_with(c))
        }
        _ => false,
    }
}

fn is_large_group(group_len: usize, lines: &[String], min_block_size: usize) -> bool {
    let mut counts: HashMap<char, usize> = HashMap::new();
    for line in lines {
        for c in py_strip(line).chars() {
            *counts.entry(c).or_insert(0) += 1;
        }
    }
    let total: usize = counts.values().sum();
    if group_len < min_block_size || total == 0 {
        return false;
    }
    let special: usize = SPECIAL_CHARS
        .chars()
        .map(|c| counts.get(&c).copied().unwrap_or(0))
        .sum();
    let with_special_chars = special as f64 / total as f64 >= MIN_SPECIAL_CHARS;
    let with_low_diversity = counts.len() as f64 / total as f64 >= MIN_DIVERSITY_CHARS;
    !with_special_chars && !with_low_diversity
}

/// Drops lines of the completion that repeat lines of the context; the exact
/// rule is in the module docs.
pub fn clean_model_reflection(context: &str, completion: &str) -> String {
    clean_model_reflection_with(context, completion, MIN_BLOCK_SIZE)
}

fn clean_model_reflection_with(context: &str, completion: &str, min_block_size: usize) -> String {
    let text = format!("{context}{completion}");
    let Some(br_pos) = find_newline_position(&text, context.len()) else {
        // Only the current line was completed: nothing to dedupe.
        return completion.to_owned();
    };
    let lines_before = split_code_lines(text.get(..br_pos).unwrap_or(""));
    let lines_after = split_code_lines(text.get(br_pos..).unwrap_or(""));
    let source: Vec<&str> = lines_before.iter().map(|l| py_strip(l)).collect();
    let target: Vec<&str> = lines_after.iter().map(|l| py_strip(l)).collect();

    let mut kept: Vec<&str> = Vec::with_capacity(lines_after.len());
    let mut next_line = 0usize;
    for group in find_common_lines(&source, &target) {
        let (Some(&(start, _)), Some(&(end, _))) = (group.first(), group.last()) else {
            continue;
        };
        let consecutive = end - start + 1 == group.len();
        let group_lines = lines_after.get(start..=end).unwrap_or(&[]);
        kept.extend(
            lines_after
                .get(next_line..start)
                .unwrap_or(&[])
                .iter()
                .map(String::as_str),
        );
        let drop = consecutive
            && (is_single_line_comment(group_lines)
                || is_large_group(group.len(), group_lines, min_block_size));
        if !drop {
            kept.extend(group_lines.iter().map(String::as_str));
        }
        next_line = end + 1;
    }
    kept.extend(
        lines_after
            .get(next_line..)
            .unwrap_or(&[])
            .iter()
            .map(String::as_str),
    );

    let mut out = text.get(context.len()..br_pos).unwrap_or("").to_owned();
    for line in kept {
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_EXCL: &[&str] = &[];

    // Cases ported from the original's test_clean_model_reflection.py.
    const PREFIX_JAVASCRIPT_1: &str =
        "// This code has a filename of test-2.js and is written in JavaScript.\ntesting";
    const COMPLETION_JAVASCRIPT_1_1: &str =
        "only\n// This code has a filename of test-2.js and is written in JavaScript.\ntestingonly";
    const COMPLETION_JAVASCRIPT_1_3: &str = "only\n\nconst another_function = () => {}";
    const PREFIX_JAVASCRIPT_2: &str = "// this will be a function to read an address

const readAddress = (address) => {
    return new Promise((resolve, reject) => {
        loadFile(address)
       .then((data) => {
            resolve(data);
       })
      .catch ((err) => {
          reject(err);
      });
    });
};
";
    const COMPLETION_JAVASCRIPT_2_1: &str =
        "\n\n\n// this will be a function to read an address\n\nconst readAddress = (address) => {\n";
    const PREFIX_JAVASCRIPT_3: &str = "
 // This code has a filename of test.js and is written in JavaScript.
import testing;

const newFunctionForValidatingEmail = (email) => {
  return emailRegex.test(email);
}

// For the mask XYZ
const writeStringBackwards = (inpStr) => {
  let outStr = \"\";
  for (let i = inpStr.length - 1; i >= 0; i--) {
    outStr += inpStr[i];
  }
  return outStr;
}

export {
";
    const COMPLETION_JAVASCRIPT_3_1: &str =
        " newFunctionForValidatingEmail, writeStringBackwards };

// This code has a filename of test.js and is written in JavaScript.
import testing;";
    const PREFIX_JAVASCRIPT_4: &str =
        " // This code has a filename of test.js and is written in JavaScript.
import testing;

const newFunctionForValidatingEmail = (email) => {
  return emailRegex.test(email);
}

// For the mask XYZ
const writeStringBackwards = (inpStr) => {
  let outStr = '';
  for (let i = inpStr.length - 1; i >= 0; i--) {
    outStr += inpStr[i];
  }
  return outSt";
    const COMPLETION_JAVASCRIPT_4_1: &str =
        "r;\n}\n\nconst maskXYZ = (inpStr) => {\n  let outStr = '';";
    const PREFIX_PYTHON_1: &str = "# This code has a filename of app.py and is written in Python.
def print_hello_world():
    print(\"Hello World!\")
\t";
    const COMPLETION_PYTHON_1_1: &str = "
# This code has a filename of app.py and is written in Python.
def print_hello_world():
    print(\"Hello World!\")
";
    const PREFIX_PYTHON_2: &str =
        "# This code has a filename of app.py and is written in Python.\ndef print_hello_world():\n\t";
    const COMPLETION_PYTHON_2_1: &str =
        "# This code has a filename of app.py and is written in Python.\n\tprint(\"hello world\")";
    const PREFIX_RUBY_1: &str = "# frozen_string_literal: true

require 'carrierwave/orm/activerecord'

class Project < ApplicationRecord
  include Gitlab::ConfigHelper
  include Gitlab::VisibilityLevel

  def print_name
    puts name
  end

# Create new code for the following description: method which checks if name is valid
";
    const COMPLETION_RUBY_1_1: &str = "def valid_name?
  name.present? && name.length <= 255
end

# Create new code for the following description: method which checks if name is valid
";

    #[test]
    fn clean_model_reflection_original_cases() {
        let cases: &[(&str, &str, usize, &str)] = &[
            (PREFIX_JAVASCRIPT_1, COMPLETION_JAVASCRIPT_1_1, 2, "only\n"),
            (PREFIX_JAVASCRIPT_1, "only", 2, "only"),
            (
                PREFIX_JAVASCRIPT_1,
                COMPLETION_JAVASCRIPT_1_3,
                2,
                COMPLETION_JAVASCRIPT_1_3,
            ),
            (PREFIX_JAVASCRIPT_2, COMPLETION_JAVASCRIPT_2_1, 3, "\n\n\n"),
            (
                PREFIX_JAVASCRIPT_3,
                COMPLETION_JAVASCRIPT_3_1,
                3,
                " newFunctionForValidatingEmail, writeStringBackwards };",
            ),
            (
                PREFIX_JAVASCRIPT_4,
                COMPLETION_JAVASCRIPT_4_1,
                3,
                COMPLETION_JAVASCRIPT_4_1,
            ),
            (PREFIX_PYTHON_1, COMPLETION_PYTHON_1_1, 3, ""),
            (
                PREFIX_PYTHON_2,
                COMPLETION_PYTHON_2_1,
                3,
                "\n\tprint(\"hello world\")",
            ),
            (PREFIX_RUBY_1, COMPLETION_RUBY_1_1, 5, COMPLETION_RUBY_1_1),
            ("   ", "", 3, ""),
            ("def hello_world():", "\n\n  ", 3, "\n\n  "),
            ("def hello \n\n\n ", "\n\n\n", 3, "\n\n\n"),
        ];
        for (i, (context, completion, min_block, expected)) in cases.iter().enumerate() {
            assert_eq!(
                clean_model_reflection_with(context, completion, *min_block),
                *expected,
                "case {i}"
            );
        }
    }

    #[test]
    fn clean_model_reflection_default_block_size() {
        // A repeated header comment line is dropped.
        let ctx = "# header line\nx = 1\n";
        assert_eq!(
            clean_model_reflection(ctx, "y = 2\n# header line\nz = 3"),
            "y = 2\nz = 3"
        );
        // A small repeated code group (< 5 lines) is kept.
        let ctx = "a = compute(1)\nb = compute(2)\n";
        assert_eq!(
            clean_model_reflection(ctx, "c = 3\na = compute(1)\nb = compute(2)"),
            "c = 3\na = compute(1)\nb = compute(2)"
        );
        // Only the current line: unchanged.
        assert_eq!(clean_model_reflection("abc", "def"), "def");
        assert_eq!(clean_model_reflection("", ""), "");
        // The first line is the current line and always kept; the second
        // repeats it and is a comment, so it goes.
        assert_eq!(clean_model_reflection("", "# x\n# x"), "# x\n");
    }

    #[test]
    fn clean_model_reflection_large_low_diversity_group() {
        let block = "aaaa bbbb\naaaa bbbb cccc\naaaa bbbb\naaaa cccc\nbbbb cccc\n";
        let ctx = format!("start\n{block}");
        let completion = format!("end of line\n{block}tail");
        // Five repeated low-diversity lines (few distinct characters, no
        // special characters) are dropped.
        assert_eq!(
            clean_model_reflection(&ctx, &completion),
            "end of line\ntail"
        );
        // The same lines full of special characters are kept.
        let block = "f(a);\nf(b);\nf(c);\nf(d);\nf(e);\n";
        let ctx = format!("start\n{block}");
        let completion = format!("x\n{block}");
        assert_eq!(clean_model_reflection(&ctx, &completion), completion);
    }

    #[test]
    fn clean_model_reflection_is_conservative_on_gapped_groups() {
        let ctx = "start\naaaa bbbb\nbbbb aaaa\naaaa cccc\ncccc aaaa\nbbbb cccc\n";
        // Without a gap the five repeated low-diversity lines are dropped.
        let completion = "cur\naaaa bbbb\nbbbb aaaa\naaaa cccc\ncccc aaaa\nbbbb cccc";
        assert_eq!(clean_model_reflection(ctx, completion), "cur");
        // With an unrelated line among them, the matched lines still map to
        // consecutive prefix lines, so the original forms one group spanning
        // the unrelated line and drops it too; this port keeps the group.
        let gapped = "cur\naaaa bbbb\nbbbb aaaa\nUNRELATED\naaaa cccc\ncccc aaaa\nbbbb cccc";
        let groups = find_common_lines(
            &[
                "start",
                "aaaa bbbb",
                "bbbb aaaa",
                "aaaa cccc",
                "cccc aaaa",
                "bbbb cccc",
                "",
            ],
            &[
                "cur",
                "aaaa bbbb",
                "bbbb aaaa",
                "UNRELATED",
                "aaaa cccc",
                "cccc aaaa",
                "bbbb cccc",
            ],
        );
        assert_eq!(groups.len(), 1);
        assert_eq!(clean_model_reflection(ctx, gapped), gapped);
    }

    #[test]
    fn find_common_lines_matches_the_numpy_version() {
        // Docstring example of the original.
        let groups = find_common_lines(&["abc", "def", "g"], &["abc", "def", "c", "abc"]);
        let targets: Vec<Vec<usize>> = groups
            .iter()
            .map(|g| g.iter().map(|p| p.0).collect())
            .collect();
        assert_eq!(targets, vec![vec![0, 1], vec![3]]);
        assert!(find_common_lines(&[], &["a"]).is_empty());
        assert!(find_common_lines(&["a"], &[]).is_empty());
        assert!(find_common_lines(&["a"], &["b"]).is_empty());
        // A run outranks an earlier single match in the same column.
        let groups = find_common_lines(&["b", "x", "a", "b"], &["a", "b"]);
        assert_eq!(groups, vec![vec![(0, 3), (1, 4)]]);
        // Repeated identical lines: first row with the column maximum wins.
        let groups = find_common_lines(&["}", "}", "}"], &["}"]);
        assert_eq!(groups, vec![vec![(0, 1)]]);
    }

    #[test]
    fn splitlines_like_python() {
        assert_eq!(py_splitlines_keepends(""), Vec::<&str>::new());
        assert_eq!(py_splitlines_keepends("a"), vec!["a"]);
        assert_eq!(py_splitlines_keepends("a\n"), vec!["a\n"]);
        assert_eq!(
            py_splitlines_keepends("a\r\nb\rc\u{2028}d\u{0b}e\u{85}"),
            vec!["a\r\n", "b\r", "c\u{2028}", "d\u{0b}", "e\u{85}"]
        );
        assert_eq!(py_splitlines_keepends("\n\n"), vec!["\n", "\n"]);
        assert_eq!(py_splitlines_keepends("\r"), vec!["\r"]);
    }

    #[test]
    fn split_code_lines_like_the_original() {
        assert_eq!(split_code_lines(""), Vec::<String>::new());
        assert_eq!(split_code_lines("a\nb"), vec!["a", "\nb"]);
        assert_eq!(split_code_lines("a\nb\n"), vec!["a", "\nb", "\n"]);
        assert_eq!(split_code_lines("\n"), vec!["", "\n"]);
        assert_eq!(split_code_lines("a\r\nb"), vec!["a\r", "\nb"]);
        // A lone \r gains a \n when joined back, as in the original.
        assert_eq!(split_code_lines("a\rb").concat(), "a\r\nb");
    }

    #[test]
    fn newline_position() {
        assert_eq!(find_newline_position("ab\ncd", 0), Some(3));
        assert_eq!(find_newline_position("ab\ncd", 3), Some(3));
        assert_eq!(find_newline_position("ab\n \tcd", 5), Some(5));
        assert_eq!(find_newline_position("ab\n xcd", 5), None);
        assert_eq!(find_newline_position("abcd", 2), None);
        assert_eq!(find_newline_position("", 0), None);
        assert_eq!(find_newline_position("a", 5), None);
        assert_eq!(find_newline_position("é\n", 1), None);
    }

    #[test]
    fn strip_code_block_markdown_cases() {
        let cases = [
            ("first line\nsecond line", "first line\nsecond line"),
            ("```\nfirst line\nsecond line```", "first line\nsecond line"),
            (
                "```unk\nfirst line\nsecond line```",
                "first line\nsecond line",
            ),
            ("```unk\nfirst line\nsecond line", "first line\nsecond line"),
            ("\nfirst line\nsecond line```", "\nfirst line\nsecond line"),
            ("```python\none line```", "one line"),
            ("```TypeScript\none line```", "one line"),
            ("```java_script\none line```", "one line"),
            ("```unknown_lang_123\none line```", "one line"),
            ("a\n```py\nb\n```\nc\n```", "a\nb\nc\n"),
            ("``` py\nx", "``` py\nx"),
            ("  ```py\nx", "  ```py\nx"),
            ("```", ""),
            ("", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(strip_code_block_markdown(input), expected, "{input:?}");
        }
    }

    #[test]
    fn prepend_new_line_cases() {
        let cases = [
            ("", "", ""),
            ("code context", "", ""),
            ("code context", "\ncompletion", "\ncompletion"),
            ("code context", "completion", "\ncompletion"),
            ("code context\n", "completion", "completion"),
            ("", "completion", "\ncompletion"),
        ];
        for (ctx, completion, expected) in cases {
            assert_eq!(prepend_new_line(ctx, completion), expected);
        }
    }

    #[test]
    fn strip_asterisks_cases() {
        let keep = [
            "    expect(person.fullname).to eq('First')\n    ****************************",
            "expect(person.fullname).to eq('First')",
            "\n      modal=\"true\"\n      *****************\n    >\n",
            "**** four",
            "",
            "  ",
        ];
        for text in keep {
            assert_eq!(strip_asterisks(text), text);
        }
        let drop = [
            "****************************\n    expect(person.fullname).to eq('First')\n  end",
            "\n\t\t    ****************************\nend",
            "      ***********=\"true\"\n    >",
            "\n\t\t    *****************>",
            "*****",
        ];
        for text in drop {
            assert_eq!(strip_asterisks(text), "");
        }
    }

    #[test]
    fn strip_whitespaces_cases() {
        assert_eq!(strip_whitespaces(""), "");
        assert_eq!(strip_whitespaces(" \n\t"), "");
        assert_eq!(strip_whitespaces("\u{1c}\u{3000}"), "");
        assert_eq!(strip_whitespaces(" x "), " x ");
        assert_eq!(strip_whitespaces("\u{200b}"), "\u{200b}");
    }

    #[test]
    fn op_names_round_trip() {
        for op in PostProcessOp::VERTEX_COMPLETION_CHAIN {
            assert_eq!(PostProcessOp::from_name(op.name()), Some(op));
        }
        assert_eq!(
            PostProcessOp::from_name("strip_asterisks"),
            Some(PostProcessOp::StripAsterisks)
        );
        assert_eq!(PostProcessOp::from_name("nope"), None);
        assert!(PostProcessOp::FixEndBlockErrors.needs_tree_sitter());
        assert!(!PostProcessOp::StripWhitespaces.needs_tree_sitter());
    }

    #[test]
    fn vertex_chain() {
        let ctx = "# header\nx = 1\n";
        assert_eq!(
            post_process_vertex_completion(ctx, "y = 2\n# header\nz", NO_EXCL),
            "y = 2\nz"
        );
        assert_eq!(post_process_vertex_completion(ctx, "  \n ", NO_EXCL), "");
        assert_eq!(post_process_vertex_completion(ctx, "", NO_EXCL), "");
        // Excluding steps.
        assert_eq!(
            post_process_vertex_completion(ctx, "y = 2\n# header\nz", &["clean_model_reflection"]),
            "y = 2\n# header\nz"
        );
        assert_eq!(
            post_process_vertex_completion(ctx, "  ", &["strip_whitespaces".to_owned()]),
            "  "
        );
        // Tree-sitter steps are no-ops; excluding them changes nothing.
        assert_eq!(
            post_process_vertex_completion(
                ctx,
                "# only a comment",
                &["remove_comment_only_completion"]
            ),
            "# only a comment"
        );
        assert_eq!(
            post_process_vertex_completion(ctx, "# only a comment", NO_EXCL),
            "# only a comment"
        );
        // The asterisk step is not in the default chain.
        assert_eq!(
            post_process_vertex_completion(ctx, "******", NO_EXCL),
            "******"
        );
    }

    #[test]
    fn generation_chain() {
        assert_eq!(
            post_process_generation("def f():", "```python\n    return 1\n```"),
            "\n    return 1\n"
        );
        assert_eq!(
            post_process_generation("def f():\n", "```python\n    return 1\n```"),
            "    return 1\n"
        );
        assert_eq!(post_process_generation("x", "```\n```"), "");
        assert_eq!(post_process_generation("x", "   "), "");
        assert_eq!(post_process_generation("x", ""), "");
        // The echoed header comment is removed.
        assert_eq!(
            post_process_generation("# gen header\nimport os\n", "# gen header\nprint(1)"),
            "\nprint(1)"
        );
    }

    #[test]
    fn anthropic_generation_chain() {
        assert_eq!(post_process_anthropic_generation(" \n"), "");
        assert_eq!(
            post_process_anthropic_generation("```py\nx\n```"),
            "```py\nx\n```"
        );
    }

    #[test]
    fn multibyte_and_huge_inputs() {
        let ctx = "日本語 🦀\n".repeat(50_000);
        let completion = "ß\n日本語 🦀\n".repeat(200);
        let out = clean_model_reflection(&ctx, &completion);
        assert!(out.starts_with('ß'));
        let out = post_process_generation(&ctx, &completion);
        assert!(!out.is_empty());
        let all_braces = "}\n".repeat(5_000);
        let out = clean_model_reflection(&all_braces, &"}\n".repeat(1_000));
        assert!(out.len() <= 2_000);
    }
}
