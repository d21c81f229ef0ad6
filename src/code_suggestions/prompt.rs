//! Prompt builders for code completions and generations (spec 5.3, 5.4, 3.2).
//!
//! Every model has an input token limit, and the editor sends up to 100 000
//! characters above and below the cursor plus optional context files, so the
//! gateway decides what part of that the model sees. The original does it in
//! four ways, all reproduced here:
//!
//! - [`build_legacy_completion_prompt`]: the Vertex `code-gecko` path. The
//!   original spends part of the budget on imports and function signatures
//!   found by tree-sitter; without tree-sitter those are empty, so the whole
//!   limit is the body: 7 % for the suffix (its start), the rest for the prefix
//!   (its end), then [`remove_incomplete_block`], optional code context, and a
//!   header comment naming the file and language.
//! - [`build_prefix_based_prompt`]: Anthropic / LiteLLM / agent completions:
//!   ⌈93 %⌉ of the limit for the prefix, the rest for the suffix, and what is
//!   left for code context prepended to the prefix.
//! - [`check_raw_prompt`]: a prompt the client wrote itself is sent as is,
//!   but only if it fits.
//! - [`build_generations_prompt`]: the v1 generations prompt, the prefix in a
//!   Markdown code fence labelled with the language.
//!
//! Percentages are applied with the same `f64` arithmetic and rounding as the
//! Python (`int()` truncation, `math.ceil`, `math.floor`), so budgets come out
//! to the same integers: 143 suffix tokens of 2 048 for gecko, 1 905 prefix
//! tokens of 2 048 for the prefix-based builder. Token counts come from
//! [`super::tokens`], which is close to but not exactly the original tokenizer.

use std::fmt;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::language::{file_extension, Language};
use super::tokens;

/// Input token limit of Vertex `code-gecko@002`.
pub const CODE_GECKO_INPUT_TOKEN_LIMIT: usize = 2048;

/// Legacy path: share of the body budget for the suffix.
pub const LEGACY_SUFFIX_PERCENT: f64 = 0.07;

/// Legacy path: share of the limit code context may take.
pub const LEGACY_CONTEXT_MAX_PERCENT: f64 = 0.5;

/// Prefix-based completions: share of the limit reserved for the suffix.
pub const SUFFIX_RESERVED_PERCENT: f64 = 0.07;

/// Prefix-based completions: default share of the limit for code context.
pub const DEFAULT_CONTEXT_MAX_PERCENT: f64 = 1.0;

/// Prefix-based completions: code-context share for Fireworks models.
pub const FIREWORKS_CONTEXT_MAX_PERCENT: f64 = 0.3;

/// [`remove_incomplete_block`] looks only at this leading share of the text.
pub const INCOMPLETE_BLOCK_MAX_TRIM_PERCENT: f64 = 0.1;

/// Name of the (always-control) suffix-truncation experiment.
pub const EXP_TRUNCATE_SUFFIX: &str = "exp_truncate_suffix";

/// An experiment and the variant a request got, as reported in the
/// response's `experiments` list and accepted in request `telemetry`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExperimentTelemetry {
    pub name: String,
    pub variant: i64,
}

/// Token bookkeeping of a built prompt, for `tokens_consumption_metadata`
/// (the caller adds `output_tokens` from the provider).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokens {
    /// Tokens of the prompt components (truncated prefix + truncated
    /// suffix, or the raw prompt); the header and code context are not counted,
    /// as in the original.
    pub input_tokens: usize,
    /// Tokens of all code context offered.
    pub context_tokens_sent: usize,
    /// Tokens of the code context that made it into the prompt.
    pub context_tokens_used: usize,
}

/// The legacy Vertex completion prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyPrompt {
    /// Header line, then code context (if any), then the truncated prefix.
    pub prefix: String,
    /// The truncated suffix.
    pub suffix: String,
    pub tokens: PromptTokens,
    /// Always `[{"name": "exp_truncate_suffix", "variant": 0}]`.
    pub experiments: Vec<ExperimentTelemetry>,
}

/// A prefix-based completion prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixBasedPrompt {
    /// Code context (if any), a newline, then the truncated prefix.
    pub prefix: String,
    /// The truncated suffix (`""` when the input suffix was empty).
    pub suffix: String,
    pub tokens: PromptTokens,
}

/// The v1 generations prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationsPrompt {
    /// ```` ```{lang}\n{prefix}\n``` ````
    pub prompt: String,
    /// Tokens of the truncated prefix (the fence is not counted).
    pub input_tokens: usize,
}

/// A prompt that cannot be built within the model's limit. The original
/// raises `ValueError` (→ HTTP 500); the caller maps this as it sees fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptError {
    /// A client-supplied prompt has more tokens than the model accepts.
    PromptTooLong { tokens: usize, limit: usize },
    /// The prompt template alone has more tokens than the model accepts.
    TemplateTooLong { tokens: usize, limit: usize },
}

impl fmt::Display for PromptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PromptError::PromptTooLong { .. } => {
                f.write_str("the prompt size exceeds overall maximum length")
            }
            PromptError::TemplateTooLong { .. } => {
                f.write_str("the template size exceeds overall maximum length")
            }
        }
    }
}

impl std::error::Error for PromptError {}

/// The experiments list every legacy completion reports: the suffix
/// truncation experiment runs, but its weights are `[1, 0]`, so the control
/// (variant 0, suffix unchanged) always wins.
pub fn legacy_experiments() -> Vec<ExperimentTelemetry> {
    vec![ExperimentTelemetry {
        name: EXP_TRUNCATE_SUFFIX.to_owned(),
        variant: 0,
    }]
}

/// Python's `int(limit * percent)` for non-negative values (`as` saturates,
/// NaN → 0).
fn percent_floor(limit: usize, percent: f64) -> usize {
    (limit as f64 * percent).floor() as usize
}

/// The header line of the legacy prompt (spec 5.3 step 7).
pub fn header_line(file_name: &str, language: Option<Language>) -> String {
    match language {
        Some(lang) => lang.comment(&format!(
            "This code has a filename of {file_name} and is written in {}.",
            lang.display_name()
        )),
        None => format!("This code has a filename of {file_name}"),
    }
}

fn end_of_block_regex() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\n(?:[a-zA-Z]|/\*|#|//)").ok())
        .as_ref()
}

/// Drops a probably incomplete first block of a left-truncated prefix: looks
/// for a newline followed by an ASCII letter, `/*`, `#` or `//` whose match
/// lies entirely within the first 10 % of the text (counted in characters,
/// `int(len * 0.1)`), and if there is one, drops everything up to and
/// including that newline.
pub fn remove_incomplete_block(text: &str) -> &str {
    let char_len = text.chars().count();
    let end_chars = percent_floor(char_len, INCOMPLETE_BLOCK_MAX_TRIM_PERCENT);
    let end_byte = text
        .char_indices()
        .nth(end_chars)
        .map(|(b, _)| b)
        .unwrap_or(text.len());
    let window = text.get(..end_byte).unwrap_or("");
    match end_of_block_regex().and_then(|re| re.find(window)) {
        // The newline is one byte, so `start + 1` is a char boundary.
        Some(m) => text.get(m.start() + 1..).unwrap_or(text),
        None => text,
    }
}

/// Builds the legacy Vertex (`code-gecko`) completion prompt without
/// tree-sitter (spec 5.3).
///
/// `code_context` must be empty unless the caller allows advanced context
/// (language server ≥ 6.3.0). Each item is prepended (newline-separated, so
/// later items end up first) only if its text is not already in the prompt
/// prefix or suffix and the running total of prepended items' tokens stays
/// within `min(total context tokens, ⌊limit × 50 %⌋)`; once an item does not
/// fit, later items do not either, because the original keeps adding their
/// tokens to the running total.
pub fn build_legacy_completion_prompt<S: AsRef<str>>(
    prefix: &str,
    suffix: &str,
    file_name: &str,
    language: Option<Language>,
    code_context: &[S],
    input_limit: usize,
) -> LegacyPrompt {
    // No imports / function signatures without tree-sitter: the body gets it all.
    let body_limit = input_limit;

    let suffix_budget = percent_floor(body_limit, LEGACY_SUFFIX_PERCENT);
    let suffix_cut = tokens::truncate_keep_start_counted(suffix, suffix_budget);
    let prefix_budget = body_limit.saturating_sub(suffix_cut.tokens);
    let prefix_cut = tokens::truncate_keep_end_counted(prefix, prefix_budget);

    let mut body_prefix = remove_incomplete_block(&prefix_cut.text).to_owned();
    let body_suffix = suffix_cut.text;

    let mut context_sent = 0;
    let mut context_used = 0;
    if !code_context.is_empty() {
        let items: Vec<(&str, usize)> = code_context
            .iter()
            .map(|item| (item.as_ref(), tokens::count(item.as_ref())))
            .collect();
        context_sent = items.iter().map(|(_, n)| n).sum();
        let budget = context_sent.min(percent_floor(input_limit, LEGACY_CONTEXT_MAX_PERCENT));
        let mut running = 0usize;
        for (text, n) in items {
            if body_prefix.contains(text) || body_suffix.contains(text) {
                continue;
            }
            running += n;
            if running <= budget {
                body_prefix = format!("{text}\n{body_prefix}");
                context_used = running;
            }
        }
    }

    LegacyPrompt {
        prefix: format!("{}\n{body_prefix}", header_line(file_name, language)),
        suffix: body_suffix,
        tokens: PromptTokens {
            input_tokens: prefix_cut.tokens + suffix_cut.tokens,
            context_tokens_sent: context_sent,
            context_tokens_used: context_used,
        },
        experiments: legacy_experiments(),
    }
}

/// The original's option handling for a percentage: a falsy `0` keeps the
/// default (1.0), anything else is clamped to `[0, 1]` (Python's
/// `max(0, min(x, 1))`, which turns NaN into 0).
fn normalise_context_percent(percent: f64) -> f64 {
    if percent == 0.0 {
        DEFAULT_CONTEXT_MAX_PERCENT
    } else if percent.is_nan() {
        0.0
    } else {
        percent.clamp(0.0, 1.0)
    }
}

struct PrefixBasedParts {
    prefix: String,
    suffix: String,
    tokens: PromptTokens,
}

/// `PromptBuilderPrefixBased.build` with one prefix snippet; `max_length` is
/// the limit minus the template's tokens.
fn prefix_based<S: AsRef<str>>(
    prefix: &str,
    suffix: &str,
    code_context: &[S],
    max_length: usize,
    suffix_reserved_percent: f64,
    context_max_percent: f64,
) -> PrefixBasedParts {
    let prefix_budget = ((1.0 - suffix_reserved_percent) * max_length as f64).ceil() as usize;
    let prefix_budget = prefix_budget.min(max_length);
    let suffix_budget = max_length - prefix_budget;

    let prefix_cut = tokens::truncate_keep_end_counted(prefix, prefix_budget);
    let suffix_cut = if suffix.is_empty() {
        None
    } else {
        Some(tokens::truncate_keep_start_counted(suffix, suffix_budget))
    };
    let suffix_tokens = suffix_cut.as_ref().map_or(0, |s| s.tokens);

    let remaining = max_length
        .saturating_sub(prefix_cut.tokens)
        .saturating_sub(suffix_tokens);
    let context_budget = (remaining as f64)
        .min(max_length as f64 * normalise_context_percent(context_max_percent))
        .floor() as usize;

    let mut out_prefix = prefix_cut.text;
    let mut context_sent = 0;
    let mut context_used = 0;
    if !code_context.is_empty() {
        let joined = code_context
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<&str>>()
            .join("\n");
        context_sent = tokens::count(&joined);
        let context_cut = tokens::truncate_keep_start_counted(&joined, context_budget);
        context_used = context_cut.tokens;
        if context_budget > 0 {
            out_prefix = format!("{}\n{out_prefix}", context_cut.text);
        }
    }

    PrefixBasedParts {
        prefix: out_prefix,
        suffix: suffix_cut.map(|s| s.text).unwrap_or_default(),
        tokens: PromptTokens {
            input_tokens: prefix_cut.tokens + suffix_tokens,
            context_tokens_sent: context_sent,
            context_tokens_used: context_used,
        },
    }
}

/// Builds a prefix-based completion prompt (spec 5.4): the prefix keeps its
/// last ⌈93 % × limit⌉ tokens, the suffix its first (limit − that) tokens,
/// and code context (items joined by `\n`, cut from the right) gets
/// `⌊min(limit − prefix − suffix tokens, limit × context_max_percent)⌋`
/// tokens and is prepended to the prefix with a newline (only if that budget
/// is positive).
///
/// `context_max_percent` is [`DEFAULT_CONTEXT_MAX_PERCENT`] (1.0) or, for
/// Fireworks, [`FIREWORKS_CONTEXT_MAX_PERCENT`] (0.3); `0` means the default
/// and other values are clamped to `[0, 1]`, as in the original.
pub fn build_prefix_based_prompt<S: AsRef<str>>(
    prefix: &str,
    suffix: &str,
    code_context: &[S],
    input_limit: usize,
    context_max_percent: f64,
) -> PrefixBasedPrompt {
    let parts = prefix_based(
        prefix,
        suffix,
        code_context,
        input_limit,
        SUFFIX_RESERVED_PERCENT,
        context_max_percent,
    );
    PrefixBasedPrompt {
        prefix: parts.prefix,
        suffix: parts.suffix,
        tokens: parts.tokens,
    }
}

/// Checks a client-supplied prompt against the model's input limit and
/// returns its token count (the prompt's `input_tokens`).
pub fn check_raw_prompt(prompt: &str, input_limit: usize) -> Result<usize, PromptError> {
    let tokens = tokens::count(prompt);
    if tokens > input_limit {
        Err(PromptError::PromptTooLong {
            tokens,
            limit: input_limit,
        })
    } else {
        Ok(tokens)
    }
}

/// [`check_raw_prompt`] for a message-list prompt: the original counts the
/// concatenation of the message contents (joined with nothing between them).
pub fn check_raw_prompt_parts<I, S>(parts: I, input_limit: usize) -> Result<usize, PromptError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let joined: String = parts.into_iter().fold(String::new(), |mut acc, part| {
        acc.push_str(part.as_ref());
        acc
    });
    check_raw_prompt(&joined, input_limit)
}

/// The fence label of the generations prompt: the language label if the
/// language is known, else the file extension (`""` if none).
pub fn generations_lang_label(file_name: &str, language: Option<Language>) -> &str {
    match language {
        Some(lang) => lang.lang_label(),
        None => file_extension(file_name),
    }
}

fn render_generations(lang: &str, prefix: &str) -> String {
    format!("```{lang}\n{prefix}\n```")
}

/// Builds the v1 generations prompt ```` ```{lang}\n{prefix}\n``` ````: the
/// fence's own tokens (with an empty prefix) are reserved, and the prefix keeps
/// its last `limit − fence` tokens.
pub fn build_generations_prompt(
    prefix: &str,
    file_name: &str,
    language: Option<Language>,
    input_limit: usize,
) -> Result<GenerationsPrompt, PromptError> {
    let lang = generations_lang_label(file_name, language);
    let template_tokens = tokens::count(&render_generations(lang, ""));
    if template_tokens > input_limit {
        return Err(PromptError::TemplateTooLong {
            tokens: template_tokens,
            limit: input_limit,
        });
    }
    let no_context: &[&str] = &[];
    let parts = prefix_based(
        prefix,
        "",
        no_context,
        input_limit - template_tokens,
        0.0,
        DEFAULT_CONTEXT_MAX_PERCENT,
    );
    Ok(GenerationsPrompt {
        prompt: render_generations(lang, &parts.prefix),
        input_tokens: parts.tokens.input_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: &[&str] = &[];

    fn lines(n: usize) -> String {
        (0..n)
            .map(|i| format!("def function_{i}(x):\n    return x * {i}\n"))
            .collect()
    }

    #[test]
    fn header_lines() {
        assert_eq!(
            header_line("main.py", Some(Language::Python)),
            "# This code has a filename of main.py and is written in Python."
        );
        assert_eq!(
            header_line("a.c", Some(Language::C)),
            "/* This code has a filename of a.c and is written in C. */"
        );
        assert_eq!(
            header_line("a.cpp", Some(Language::Cpp)),
            "// This code has a filename of a.cpp and is written in C++."
        );
        assert_eq!(
            header_line("README", None),
            "This code has a filename of README"
        );
        assert_eq!(header_line("", None), "This code has a filename of ");
    }

    #[test]
    fn remove_incomplete_block_cases() {
        // 40 chars: the window is the first 4 characters.
        let s = format!("ab\nc{}", "z".repeat(36));
        assert_eq!(s.chars().count(), 40);
        assert_eq!(remove_incomplete_block(&s), format!("c{}", "z".repeat(36)));
        // The match must end inside the window: "\nc" spans chars 2..4, window 4 → ok;
        // with one more leading char it spans 3..5 and the window is still 4.
        let s2 = format!("abc\nd{}", "z".repeat(35));
        assert_eq!(s2.chars().count(), 40);
        assert_eq!(remove_incomplete_block(&s2), s2);
        // Comment markers.
        let pad = "x".repeat(60);
        assert_eq!(
            remove_incomplete_block(&format!("}}\n# c{pad}")),
            format!("# c{pad}")
        );
        assert_eq!(
            remove_incomplete_block(&format!("}}\n// c{pad}")),
            format!("// c{pad}")
        );
        assert_eq!(
            remove_incomplete_block(&format!("}}\n/* c{pad}")),
            format!("/* c{pad}")
        );
        // Indented lines, digits and lone '/' are not block starts.
        assert_eq!(
            remove_incomplete_block(&format!("}}\n  x{pad}")),
            format!("}}\n  x{pad}")
        );
        assert_eq!(
            remove_incomplete_block(&format!("}}\n1{pad}")),
            format!("}}\n1{pad}")
        );
        assert_eq!(
            remove_incomplete_block(&format!("}}\n/x{pad}")),
            format!("}}\n/x{pad}")
        );
        // Non-ASCII letters are not `[a-zA-Z]`.
        assert_eq!(
            remove_incomplete_block(&format!("}}\né{pad}")),
            format!("}}\né{pad}")
        );
        // The first match wins.
        assert_eq!(
            remove_incomplete_block(&format!("a\nb\nc{pad}")),
            format!("b\nc{pad}")
        );
        assert_eq!(remove_incomplete_block(""), "");
        assert_eq!(remove_incomplete_block("\na"), "\na");
    }

    #[test]
    fn remove_incomplete_block_counts_characters_not_bytes() {
        // 20 multi-byte chars then "\nx" then padding: 100 chars total, window 10 chars.
        let s = format!("{}\nx{}", "é".repeat(5), "y".repeat(93));
        assert_eq!(s.chars().count(), 100);
        assert_eq!(remove_incomplete_block(&s), format!("x{}", "y".repeat(93)));
        let s = format!("{}\nx{}", "é".repeat(9), "y".repeat(89));
        assert_eq!(remove_incomplete_block(&s), s);
    }

    #[test]
    fn legacy_small_input_is_kept_whole() {
        let p = build_legacy_completion_prompt(
            "def add(a, b):\n    ",
            "\nprint(add(1, 2))\n",
            "calc.py",
            Some(Language::Python),
            NONE,
            CODE_GECKO_INPUT_TOKEN_LIMIT,
        );
        assert_eq!(
            p.prefix,
            "# This code has a filename of calc.py and is written in Python.\ndef add(a, b):\n    "
        );
        assert_eq!(p.suffix, "\nprint(add(1, 2))\n");
        assert_eq!(
            p.tokens.input_tokens,
            tokens::count("def add(a, b):\n    ") + tokens::count("\nprint(add(1, 2))\n")
        );
        assert_eq!(p.tokens.context_tokens_sent, 0);
        assert_eq!(p.tokens.context_tokens_used, 0);
        assert_eq!(
            serde_json::to_string(&p.experiments).unwrap_or_default(),
            r#"[{"name":"exp_truncate_suffix","variant":0}]"#
        );
    }

    #[test]
    fn legacy_budgets() {
        let prefix = lines(2000);
        let suffix = lines(2000);
        let p = build_legacy_completion_prompt(
            &prefix,
            &suffix,
            "f.py",
            Some(Language::Python),
            NONE,
            CODE_GECKO_INPUT_TOKEN_LIMIT,
        );
        // 143 = int(2048 * 0.07) tokens were kept; re-encoding the kept text
        // may differ by a token at the cut.
        assert!(tokens::count(&p.suffix).abs_diff(143) <= 2);
        assert!(suffix.starts_with(&p.suffix));
        let body = p
            .prefix
            .strip_prefix("# This code has a filename of f.py and is written in Python.\n")
            .unwrap_or("missing header");
        assert!(prefix.ends_with(body));
        assert_eq!(p.tokens.input_tokens, 2048);
        // The incomplete first block was dropped: the body starts at a `def`.
        assert!(body.starts_with("def function_"), "{:?}", &body[..40]);
    }

    #[test]
    fn legacy_suffix_share_unused_goes_to_prefix() {
        let prefix = lines(2000);
        let p = build_legacy_completion_prompt(&prefix, "", "f.rb", None, NONE, 2048);
        assert_eq!(p.suffix, "");
        assert_eq!(p.tokens.input_tokens, 2048);
        assert!(p.prefix.starts_with("This code has a filename of f.rb\n"));
    }

    #[test]
    fn legacy_code_context_is_prepended_in_reverse_order() {
        let ctx = ["// helper one", "// helper two"];
        let p = build_legacy_completion_prompt(
            "int main() {\n",
            "}\n",
            "m.go",
            Some(Language::Go),
            &ctx,
            2048,
        );
        assert_eq!(
            p.prefix,
            "// This code has a filename of m.go and is written in Go.\n// helper two\n// helper one\nint main() {\n"
        );
        let sent = tokens::count(ctx[0]) + tokens::count(ctx[1]);
        assert_eq!(p.tokens.context_tokens_sent, sent);
        assert_eq!(p.tokens.context_tokens_used, sent);
        assert_eq!(
            p.tokens.input_tokens,
            tokens::count("int main() {\n") + tokens::count("}\n")
        );
    }

    #[test]
    fn legacy_code_context_skips_text_already_present() {
        let ctx = ["int main", "unused()", "}", "x"];
        let p = build_legacy_completion_prompt("int main() {\n", "}\n", "m.c", None, &ctx, 2048);
        // "int main" is in the prefix, "}" in the suffix; "x" is not anywhere.
        assert_eq!(
            p.prefix,
            "This code has a filename of m.c\nx\nunused()\nint main() {\n"
        );
        let sent: usize = ctx.iter().map(|c| tokens::count(c)).sum();
        assert_eq!(p.tokens.context_tokens_sent, sent);
        assert_eq!(
            p.tokens.context_tokens_used,
            tokens::count("unused()") + tokens::count("x")
        );
    }

    #[test]
    fn legacy_code_context_stops_at_the_budget_for_good() {
        // Limit 40 → context budget 20 tokens.
        let big = "word ".repeat(30); // 31 tokens
        let ctx = ["small one", big.as_str(), "tiny"];
        let p = build_legacy_completion_prompt("x", "", "a.py", Some(Language::Python), &ctx, 40);
        // "small one" fits, `big` overflows the running total, and "tiny" is
        // then over budget too because the running total keeps counting.
        assert!(p.prefix.contains("small one\n"));
        assert!(!p.prefix.contains("word"));
        assert!(!p.prefix.contains("tiny"));
        assert_eq!(p.tokens.context_tokens_used, tokens::count("small one"));
        assert_eq!(
            p.tokens.context_tokens_sent,
            tokens::count("small one") + tokens::count(&big) + tokens::count("tiny")
        );
    }

    #[test]
    fn legacy_empty_and_zero_limit() {
        let p = build_legacy_completion_prompt("", "", "", None, NONE, 2048);
        assert_eq!(p.prefix, "This code has a filename of \n");
        assert_eq!(p.suffix, "");
        assert_eq!(p.tokens, PromptTokens::default());
        let p = build_legacy_completion_prompt("abc", "def", "x.py", None, &["ctx"], 0);
        assert_eq!(p.prefix, "This code has a filename of x.py\n");
        assert_eq!(p.suffix, "");
        assert_eq!(p.tokens.input_tokens, 0);
        assert_eq!(p.tokens.context_tokens_used, 0);
    }

    #[test]
    fn prefix_based_budgets() {
        let prefix = lines(2000);
        let suffix = lines(2000);
        let p =
            build_prefix_based_prompt(&prefix, &suffix, NONE, 2048, DEFAULT_CONTEXT_MAX_PERCENT);
        // ceil(0.93 * 2048) = 1905 (with Python's float: 0.9299999999999999 * 2048 = 1904.64).
        assert!(tokens::count(&p.prefix).abs_diff(1905) <= 2);
        assert!(tokens::count(&p.suffix).abs_diff(2048 - 1905) <= 2);
        assert!(prefix.ends_with(&p.prefix));
        assert!(suffix.starts_with(&p.suffix));
        assert_eq!(p.tokens.input_tokens, 2048);
        assert_eq!(p.tokens.context_tokens_sent, 0);
    }

    #[test]
    fn prefix_budget_rounding_matches_python() {
        // 0.9299999999999999 * 100 = 92.99999999999999 → ceil 93.
        let long = "a ".repeat(500);
        let p = build_prefix_based_prompt(&long, &long, NONE, 100, 1.0);
        assert_eq!(p.tokens.input_tokens, 100);
        assert_eq!(tokens::count(&p.prefix), 93);
        assert_eq!(tokens::count(&p.suffix), 7);
    }

    #[test]
    fn prefix_based_context_gets_what_is_left() {
        let ctx = ["fn helper() {}", "struct Thing;"];
        let p = build_prefix_based_prompt("let x = ", ";\n", &ctx, 2048, 1.0);
        assert_eq!(p.prefix, "fn helper() {}\nstruct Thing;\nlet x = ");
        assert_eq!(p.suffix, ";\n");
        let sent = tokens::count("fn helper() {}\nstruct Thing;");
        assert_eq!(p.tokens.context_tokens_sent, sent);
        assert_eq!(p.tokens.context_tokens_used, sent);
        assert_eq!(
            p.tokens.input_tokens,
            tokens::count("let x = ") + tokens::count(";\n")
        );
    }

    #[test]
    fn prefix_based_context_is_capped_by_percent_and_remaining() {
        let ctx_text = "alpha ".repeat(400);
        let ctx = [ctx_text.as_str()];
        // Fireworks: 30 % of 100 = 30 tokens at most.
        let p = build_prefix_based_prompt("x", "", &ctx, 100, FIREWORKS_CONTEXT_MAX_PERCENT);
        assert_eq!(p.tokens.context_tokens_used, 30);
        assert_eq!(p.tokens.context_tokens_sent, tokens::count(&ctx_text));
        assert!(p.prefix.ends_with("\nx"));
        assert!(ctx_text.starts_with(p.prefix.trim_end_matches("\nx")));
        // Remaining: a prefix of 95 tokens leaves 5.
        let prefix = "b ".repeat(95);
        let p = build_prefix_based_prompt(&prefix, "", &ctx, 100, 1.0);
        assert_eq!(p.tokens.input_tokens, 93);
        assert_eq!(p.tokens.context_tokens_used, 7);
    }

    #[test]
    fn prefix_based_no_room_means_no_context_and_no_newline() {
        let long = "c ".repeat(500);
        let p = build_prefix_based_prompt(&long, &long, &["ctx"], 100, 1.0);
        assert!(!p.prefix.contains("ctx"));
        assert_eq!(p.tokens.context_tokens_used, 0);
        assert_eq!(p.tokens.context_tokens_sent, tokens::count("ctx"));
        assert!(!p.prefix.starts_with('\n'));
    }

    #[test]
    fn prefix_based_context_percent_normalisation() {
        assert_eq!(normalise_context_percent(0.0), 1.0);
        assert_eq!(normalise_context_percent(0.3), 0.3);
        assert_eq!(normalise_context_percent(7.0), 1.0);
        assert_eq!(normalise_context_percent(-1.0), 0.0);
        assert_eq!(normalise_context_percent(f64::NAN), 0.0);
        assert_eq!(normalise_context_percent(f64::INFINITY), 1.0);
        // A negative percentage leaves no room for context at all.
        let p = build_prefix_based_prompt("x", "", &["ctx"], 100, -1.0);
        assert_eq!(p.prefix, "x");
        assert_eq!(p.tokens.context_tokens_used, 0);
    }

    #[test]
    fn prefix_based_empty_context_item_adds_a_newline() {
        let p = build_prefix_based_prompt("x", "", &[""], 100, 1.0);
        assert_eq!(p.prefix, "\nx");
        assert_eq!(p.tokens.context_tokens_sent, 0);
    }

    #[test]
    fn prefix_based_degenerate_limits() {
        let p = build_prefix_based_prompt("abc", "def", &["ctx"], 0, 1.0);
        assert_eq!(p.prefix, "");
        assert_eq!(p.suffix, "");
        assert_eq!(p.tokens.input_tokens, 0);
        let p = build_prefix_based_prompt("abc", "def", NONE, 1, 1.0);
        assert_eq!(p.tokens.input_tokens, 1);
        assert_eq!(p.suffix, "");
        let p = build_prefix_based_prompt("", "", NONE, 2048, 1.0);
        assert_eq!(p.prefix, "");
        assert_eq!(p.suffix, "");
    }

    #[test]
    fn raw_prompt_limit() {
        assert_eq!(check_raw_prompt("hello world", 2), Ok(2));
        assert_eq!(check_raw_prompt("", 0), Ok(0));
        let err = check_raw_prompt("hello world", 1);
        assert_eq!(
            err,
            Err(PromptError::PromptTooLong {
                tokens: 2,
                limit: 1
            })
        );
        assert_eq!(
            err.map_err(|e| e.to_string()),
            Err("the prompt size exceeds overall maximum length".to_owned())
        );
        assert_eq!(check_raw_prompt_parts(["hello", " world"], 2), Ok(2));
        assert!(check_raw_prompt_parts(vec!["a".to_owned(); 10], 1).is_err());
        assert_eq!(check_raw_prompt_parts(Vec::<String>::new(), 0), Ok(0));
    }

    #[test]
    fn generations_prompt() {
        let g = build_generations_prompt("def f():\n", "a.py", Some(Language::Python), 1000);
        let g = g.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g.prompt, "```python\ndef f():\n\n```");
        assert_eq!(g.input_tokens, tokens::count("def f():\n"));

        let g = build_generations_prompt("x", "notes.md", None, 1000);
        assert_eq!(g.map(|g| g.prompt), Ok("```md\nx\n```".to_owned()));
        let g = build_generations_prompt("x", "Makefile", None, 1000);
        assert_eq!(g.map(|g| g.prompt), Ok("```\nx\n```".to_owned()));
        let g = build_generations_prompt("", "a.ts", Some(Language::Ts), 1000);
        assert_eq!(g.map(|g| g.prompt), Ok("```ts\n\n```".to_owned()));
    }

    #[test]
    fn generations_prompt_truncates_the_prefix_from_the_left() {
        let prefix = lines(1000);
        let fence = tokens::count("```python\n\n```");
        let g = build_generations_prompt(&prefix, "a.py", Some(Language::Python), 500)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g.input_tokens, 500 - fence);
        let inner = g
            .prompt
            .strip_prefix("```python\n")
            .and_then(|s| s.strip_suffix("\n```"))
            .unwrap_or("bad fence");
        assert!(prefix.ends_with(inner));
        assert_eq!(tokens::count(inner), 500 - fence);
    }

    #[test]
    fn generations_template_too_long() {
        let err = build_generations_prompt("x", "a.py", Some(Language::Python), 1);
        assert!(matches!(err, Err(PromptError::TemplateTooLong { .. })));
        assert_eq!(
            err.map_err(|e| e.to_string()).err().unwrap_or_default(),
            "the template size exceeds overall maximum length"
        );
    }

    #[test]
    fn generations_lang_labels() {
        assert_eq!(
            generations_lang_label("a.py", Some(Language::Python)),
            "python"
        );
        assert_eq!(generations_lang_label("a.weird", None), "weird");
        assert_eq!(generations_lang_label("", None), "");
    }

    #[test]
    fn multibyte_and_huge_inputs() {
        let prefix = "日本語のコード 🦀\n".repeat(20_000);
        let p = build_legacy_completion_prompt(
            &prefix,
            &prefix,
            "ß.rs",
            Some(Language::Rust),
            &[prefix.as_str()],
            2048,
        );
        assert!(p.tokens.input_tokens <= 2048);
        assert!(p.tokens.context_tokens_used == 0);
        let p = build_prefix_based_prompt(&prefix, &prefix, &[prefix.as_str()], 2048, 1.0);
        assert!(p.tokens.input_tokens <= 2048);
        assert!(p.tokens.input_tokens + p.tokens.context_tokens_used <= 2048);
        assert!(prefix.starts_with(&p.suffix));
    }
}
