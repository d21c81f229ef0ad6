//! The ReAct agent's reading of the model's text, streamed.
//!
//! The original parses the model's output with LangChain's cumulative parser: after every chunk
//! the whole text so far is stripped, wrapped as `<message>Thought: {text}</message>` and matched
//! against four regular expressions. `Final Answer:` wins; otherwise `Action:` … `Action Input:`
//! is a tool action; otherwise the output is "unknown". Final answers stream as deltas (the
//! answer so far minus what was already sent), actions and unknown output are sent once, at the
//! end.
//!
//! Re-running regexes over the whole text after every chunk is quadratic. [`ReactStream`] gets
//! the same answer in one pass: it looks for the first `Final Answer:` only in new text (with a
//! marker-length overlap), and from then on sends, after each chunk, the answer's new bytes.
//! What the original would hold back it holds back too: leading and trailing whitespace (the
//! original strips the text before matching). Beyond that only bytes that may be the start of
//! `</message>` are held (the end of the original's answer group): the original would send them
//! and then, when the marker completes, its answer would shrink — here the answer simply ends
//! before the marker. Actions and unknown output are decided once, at the end, with the
//! original's own regular expressions, so they match it exactly.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{json, Value};

use crate::pyjson;

/// Where a final answer starts.
pub const FINAL_ANSWER: &str = "Final Answer:";
/// Where the original's answer group ends (the wrapper it adds around the text).
const MESSAGE_END: &str = "</message>";

/// Python's whitespace (`str.isspace`, `\s` in `re`): Unicode White_Space plus the ASCII
/// separators U+001C–U+001F.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()`.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// The `\s` of the original's patterns.
const WS: &str = r"[\s\x1C-\x1F]";

fn regex(pattern: &str) -> Option<Regex> {
    Regex::new(&pattern.replace(r"\s", WS)).ok()
}

/// The original's patterns, matched against the wrapped text.
struct Patterns {
    thought: Regex,
    action: Regex,
    action_input: Regex,
}

static PATTERNS: LazyLock<Option<Patterns>> = LazyLock::new(|| {
    Some(Patterns {
        thought: regex(r"<message>Thought:\s*([\s\S]*?)\s*(?:Action|Final Answer):")?,
        action: regex(r"Action:\s*([\s\S]*?)\s*Action")?,
        action_input: regex(r"Action Input:\s*([\s\S]*?)\s*</message>")?,
    })
});

/// One line of the NDJSON response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// `final_answer_delta`: the next piece of the answer.
    FinalAnswerDelta(String),
    /// `action`: the tool the model chose.
    Action {
        /// The tool's name.
        tool: String,
        /// What to ask it.
        tool_input: String,
        /// The model's reasoning.
        thought: String,
    },
    /// `unknown`: output that is neither an answer nor an action.
    Unknown(String),
    /// `error`: the model call failed, or the chosen tool is not offered.
    Error {
        /// What went wrong.
        message: String,
        /// Whether asking again may work.
        retryable: bool,
    },
}

impl AgentEvent {
    /// The event as the original writes it: `json.dumps({"type": .., "data": {..}})` and a
    /// newline.
    pub fn to_line(&self) -> String {
        let (kind, data) = match self {
            AgentEvent::FinalAnswerDelta(text) => ("final_answer_delta", json!({"text": text})),
            AgentEvent::Action {
                tool,
                tool_input,
                thought,
            } => (
                "action",
                json!({"tool": tool, "tool_input": tool_input, "thought": thought}),
            ),
            AgentEvent::Unknown(text) => ("unknown", json!({"text": text})),
            AgentEvent::Error { message, retryable } => {
                ("error", json!({"message": message, "retryable": retryable}))
            }
        };
        let mut line = pyjson::dumps(&json!({"type": kind, "data": data}));
        line.push('\n');
        line
    }

    /// The event's type, as on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            AgentEvent::FinalAnswerDelta(_) => "final_answer_delta",
            AgentEvent::Action { .. } => "action",
            AgentEvent::Unknown(_) => "unknown",
            AgentEvent::Error { .. } => "error",
        }
    }

    /// The event as a JSON value (tests, logs).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.to_line().trim_end()).unwrap_or(Value::Null)
    }
}

/// What the whole output was, decided when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A final answer (its deltas were, or are, streamed); `rest` is what was still held back.
    FinalAnswer {
        /// The last delta, if any bytes were held back.
        rest: Option<String>,
    },
    /// A tool action (the tool name as the original normalises it).
    Action {
        /// The tool's name.
        tool: String,
        /// What to ask it.
        tool_input: String,
        /// The model's reasoning (`\_` unescaped).
        thought: String,
    },
    /// Neither: the stripped text.
    Unknown(String),
}

/// The original's tool-name fix-up: models sometimes answer the merge request tool's class
/// name; escaped underscores (`issue\_reader`, as markdown-minded models write) are unescaped.
pub fn original_tool_name(name: &str) -> String {
    if name == "MergeRequestReader" {
        return "merge_request_reader".to_string();
    }
    name.replace("\\_", "_")
}

/// The action in a whole output, as the original's regexes find it.
pub fn parse_action(text: &str) -> Option<Outcome> {
    let patterns = PATTERNS.as_ref()?;
    let wrapped = format!("<message>Thought: {}</message>", py_strip(text));
    let tool = patterns.action.captures(&wrapped)?.get(1)?.as_str();
    let tool_input = patterns.action_input.captures(&wrapped)?.get(1)?.as_str();
    let thought = patterns
        .thought
        .captures(&wrapped)
        .and_then(|c| c.get(1))
        .map(|m| m.as_str().replace("\\_", "_"))
        .unwrap_or_default();
    Some(Outcome::Action {
        tool: original_tool_name(tool),
        tool_input: tool_input.to_string(),
        thought,
    })
}

/// The final answer in a whole output (`None` when there is no `Final Answer:`).
pub fn parse_final_answer(text: &str) -> Option<String> {
    let stripped = py_strip(text);
    let start = stripped.find(FINAL_ANSWER)? + FINAL_ANSWER.len();
    let answer = stripped[start..].trim_start_matches(is_py_space);
    let answer = match answer.find(MESSAGE_END) {
        Some(end) => &answer[..end],
        None => answer,
    };
    Some(answer.trim_end_matches(is_py_space).to_string())
}

/// The largest `i <= at` that is a char boundary of `s`.
fn floor_boundary(s: &str, mut at: usize) -> usize {
    at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// `s` without a trailing proper prefix of `marker` (bytes that may become the marker).
fn without_partial_suffix<'a>(s: &'a str, marker: &str) -> &'a str {
    for len in (1..marker.len()).rev() {
        if s.ends_with(&marker[..len]) {
            return &s[..s.len() - len];
        }
    }
    s
}

/// The model's text, read as it streams (see the module docs).
#[derive(Debug, Default)]
pub struct ReactStream {
    text: String,
    /// Bytes of `text` already searched for `Final Answer:`.
    scanned: usize,
    /// Where the answer starts (just after the first `Final Answer:`).
    answer_from: Option<usize>,
    /// Bytes of the answer (from its first non-space character) already sent.
    sent: usize,
    /// The answer ended at `</message>`: nothing more is sent.
    closed: bool,
}

impl ReactStream {
    /// A parser with no text yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The text so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Add a chunk of the model's text; the answer's new bytes, if there are any to send.
    pub fn push(&mut self, chunk: &str) -> Option<String> {
        self.text.push_str(chunk);
        if self.answer_from.is_none() {
            let from = floor_boundary(
                &self.text,
                self.scanned.saturating_sub(FINAL_ANSWER.len() - 1),
            );
            if let Some(i) = self.text[from..].find(FINAL_ANSWER) {
                self.answer_from = Some(from + i + FINAL_ANSWER.len());
            }
            self.scanned = self.text.len();
        }
        self.delta(false)
    }

    fn delta(&mut self, at_end: bool) -> Option<String> {
        let from = self.answer_from?;
        if self.closed {
            return None;
        }
        let answer = self.text[from..].trim_start_matches(is_py_space);
        let visible = match answer.find(MESSAGE_END) {
            Some(end) => {
                self.closed = true;
                answer[..end].trim_end_matches(is_py_space)
            }
            None if at_end => answer.trim_end_matches(is_py_space),
            None => {
                let trimmed = answer.trim_end_matches(is_py_space);
                without_partial_suffix(trimmed, MESSAGE_END).trim_end_matches(is_py_space)
            }
        };
        if visible.len() <= self.sent || !visible.is_char_boundary(self.sent) {
            return None;
        }
        let delta = visible[self.sent..].to_string();
        self.sent = visible.len();
        Some(delta)
    }

    /// The output ended: what it was, with the answer's last held-back bytes.
    pub fn finish(mut self) -> Outcome {
        if self.answer_from.is_some() {
            return Outcome::FinalAnswer {
                rest: self.delta(true),
            };
        }
        parse_action(&self.text)
            .unwrap_or_else(|| Outcome::Unknown(py_strip(&self.text).to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feed `chunks`; the deltas and the outcome.
    fn run(chunks: &[&str]) -> (Vec<String>, Outcome) {
        let mut p = ReactStream::new();
        let mut deltas: Vec<String> = chunks.iter().filter_map(|c| p.push(c)).collect();
        let outcome = p.finish();
        if let Outcome::FinalAnswer { rest: Some(r) } = &outcome {
            deltas.push(r.clone());
        }
        (deltas, outcome)
    }

    #[test]
    fn final_answer_streams_as_it_arrives() {
        let mut p = ReactStream::new();
        assert_eq!(p.push("Thought: I know.\nFinal Ans"), None);
        assert_eq!(p.push("wer: Hel"), Some("Hel".into()));
        assert_eq!(p.push("lo"), Some("lo".into()));
        // Trailing whitespace waits for what follows it, as the original's strip does.
        assert_eq!(p.push(" \n"), None);
        assert_eq!(p.push("world!"), Some(" \nworld!".into()));
        assert_eq!(p.finish(), Outcome::FinalAnswer { rest: None });
    }

    #[test]
    fn a_possible_message_end_is_held_until_it_resolves() {
        let (deltas, _) = run(&["Final Answer: Vec", "<", "String> ok"]);
        assert_eq!(deltas, vec!["Vec", "<String> ok"]);
        let (deltas, _) = run(&["Final Answer: a <", "/mess"]);
        assert_eq!(deltas, vec!["a", " </mess"], "flushed at the end");
        let (deltas, _) = run(&["Final Answer: a </mess", "age> tail"]);
        assert_eq!(deltas, vec!["a"], "the answer ends at the marker");
    }

    #[test]
    fn actions_and_unknown_output_are_decided_at_the_end() {
        let text = "I need the issue\nAction: issue\\_reader\nAction Input: Summarize #123\n";
        let (deltas, outcome) = run(&[text]);
        assert!(deltas.is_empty());
        assert_eq!(
            outcome,
            Outcome::Action {
                tool: "issue_reader".into(),
                tool_input: "Summarize #123".into(),
                thought: "I need the issue".into(),
            }
        );
        let (_, outcome) =
            run(&["Thought: read\\_it\nAction: MergeRequestReader\nAction Input: !1"]);
        assert_eq!(
            outcome,
            Outcome::Action {
                tool: "merge_request_reader".into(),
                tool_input: "!1".into(),
                thought: "Thought: read_it".into(),
            },
            "the wrapper adds its own `Thought: `, so a model's own one stays in the thought"
        );
        assert_eq!(run(&["  mock  "]).1, Outcome::Unknown("mock".into()));
        assert_eq!(run(&[]).1, Outcome::Unknown(String::new()));
        assert_eq!(
            run(&["Action: x"]).1,
            Outcome::Unknown("Action: x".into()),
            "an action needs an input"
        );
    }

    #[test]
    fn a_final_answer_wins_over_an_action() {
        let (deltas, outcome) = run(&["Action: a\nAction Input: b\nFinal Answer: c"]);
        assert_eq!(deltas, vec!["c"]);
        assert_eq!(outcome, Outcome::FinalAnswer { rest: None });
        let (deltas, _) = run(&["Final Answer:   \n"]);
        assert!(deltas.is_empty(), "an empty answer sends nothing");
    }

    #[test]
    fn lines_are_json_dumps() {
        assert_eq!(
            AgentEvent::FinalAnswerDelta("Hé\n".into()).to_line(),
            "{\"type\": \"final_answer_delta\", \"data\": {\"text\": \"H\\u00e9\\n\"}}\n"
        );
        assert_eq!(
            AgentEvent::Action {
                tool: "issue_reader".into(),
                tool_input: "Summarize #123".into(),
                thought: "I need the issue".into()
            }
            .to_line(),
            "{\"type\": \"action\", \"data\": {\"tool\": \"issue_reader\", \"tool_input\": \"Summarize #123\", \"thought\": \"I need the issue\"}}\n"
        );
        assert_eq!(
            AgentEvent::Error {
                message: "overloaded_error".into(),
                retryable: true
            }
            .to_line(),
            "{\"type\": \"error\", \"data\": {\"message\": \"overloaded_error\", \"retryable\": true}}\n"
        );
    }

    /// Split `text` at the char boundaries nearest to `cuts`.
    fn split(text: &str, cuts: &[usize]) -> Vec<String> {
        let mut points: Vec<usize> = cuts
            .iter()
            .map(|c| floor_boundary(text, c % (text.len() + 1)))
            .collect();
        points.push(0);
        points.push(text.len());
        points.sort_unstable();
        points.dedup();
        points
            .windows(2)
            .map(|w| text[w[0]..w[1]].to_string())
            .collect()
    }

    fn text_strategy() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("Thought: ".to_string()),
            Just("Final Answer:".to_string()),
            Just("Final Ans".to_string()),
            Just("Action:".to_string()),
            Just("Action Input:".to_string()),
            Just("</message>".to_string()),
            Just("</mes".to_string()),
            Just("<".to_string()),
            Just(" ".to_string()),
            Just("\n".to_string()),
            Just("\u{1f}".to_string()),
            Just("\\_".to_string()),
            "[a-zé ]{0,6}",
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn any_split_gives_the_whole_texts_events(
            text in text_strategy(),
            cuts in proptest::collection::vec(0usize..200, 0..8),
        ) {
            let chunks = split(&text, &cuts);
            let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
            let (deltas, outcome) = run(&refs);
            let (whole_deltas, whole_outcome) = run(&[text.as_str()]);
            prop_assert_eq!(deltas.concat(), whole_deltas.concat());
            prop_assert!(deltas.iter().all(|d| !d.is_empty()));
            match (&outcome, &whole_outcome) {
                (Outcome::FinalAnswer { .. }, Outcome::FinalAnswer { .. }) => {}
                _ => prop_assert_eq!(&outcome, &whole_outcome),
            }
            // The answer is the original's regex reading of the whole text.
            if let Some(answer) = parse_final_answer(&text) {
                prop_assert_eq!(deltas.concat(), answer);
            } else {
                prop_assert!(deltas.is_empty());
            }
        }

        #[test]
        fn deltas_are_sent_before_the_end(prefix in "[a-z ]{0,10}", answer in "[a-z]{1,10}") {
            let mut p = ReactStream::new();
            let first = p.push(&format!("{prefix}Final Answer: {answer}"));
            prop_assert_eq!(first, Some(answer));
        }
    }
}
