//! Property tests across the whole module: whatever text a client or a model
//! sends, no public function panics, and the prompt builders stay within
//! their budgets. (Per-function properties live beside each function.)

use proptest::prelude::*;

use super::language::{file_extension, lang_label_or_empty, Language};
use super::language_server::{pep440_at_least, supports_advanced_context, Pep440Version};
use super::post::{self, PostProcessOp};
use super::prompt;
use super::tokens;

/// Random strings biased towards what the processing code looks at:
/// newlines of every kind, indentation, comment markers, fences, asterisks,
/// version-ish fragments and multi-byte characters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(
            prop_oneof![
                Just("\n"),
                Just("\r\n"),
                Just("\r"),
                Just("\u{2028}"),
                Just("\u{1c}"),
                Just("    "),
                Just("\t"),
                Just("// c"),
                Just("# c"),
                Just("/* c */"),
                Just("```"),
                Just("```py\n"),
                Just("*****"),
                Just("def f(x):"),
                Just("return x"),
                Just("}"),
                Just("6.3.0"),
                Just("-pre"),
                Just("rc1"),
                Just(".post2"),
                Just("+local.1"),
                Just("!"),
                Just("é"),
                Just("日本語"),
                Just("🦀"),
                Just("\u{301}"),
            ],
            0..60,
        )
        .prop_map(|parts| parts.concat()),
    ]
}

fn context_items() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(text(), 0..4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn language_never_panics(file in text(), editor in proptest::option::of(text())) {
        let lang = Language::detect(&file, editor.as_deref());
        let _ = file_extension(&file);
        let _ = Language::from_extension(&file);
        let _ = Language::from_editor_language(&file);
        let _ = lang_label_or_empty(lang);
        if let Some(lang) = lang {
            let _ = (lang.lang_label(), lang.display_name(), lang.comment(&file));
            let _ = lang.comment_style().wrap(&file);
        }
    }

    #[test]
    fn versions_never_panic(a in text(), b in text()) {
        let _ = supports_advanced_context(Some(&a));
        let _ = pep440_at_least(&a, &b);
        let va = Pep440Version::parse_lenient(Some(&a));
        let vb = Pep440Version::parse_lenient(Some(&b));
        let _ = (va.cmp(&vb), va.is_prerelease());
        // Ordering is total and consistent.
        prop_assert_eq!(va.cmp(&vb), vb.cmp(&va).reverse());
        prop_assert!(va == va.clone());
    }

    #[test]
    fn tokens_never_panic(t in text(), budget in 0usize..64) {
        let n = tokens::count(&t);
        let end = tokens::truncate_keep_end(&t, budget);
        let start = tokens::truncate_keep_start(&t, budget);
        prop_assert!(t.ends_with(&end));
        prop_assert!(t.starts_with(&start));
        if budget >= n {
            prop_assert_eq!(&end, &t);
        }
    }

    #[test]
    fn legacy_prompt_never_panics(
        prefix in text(),
        suffix in text(),
        file in text(),
        ctx in context_items(),
        limit in 0usize..300,
    ) {
        let lang = Language::detect(&file, None);
        let p = prompt::build_legacy_completion_prompt(&prefix, &suffix, &file, lang, &ctx, limit);
        prop_assert!(p.tokens.input_tokens <= limit);
        prop_assert!(p.tokens.context_tokens_used <= p.tokens.context_tokens_sent);
        prop_assert!(p.tokens.context_tokens_used <= limit / 2);
        prop_assert!(suffix.starts_with(&p.suffix));
        let header = prompt::header_line(&file, lang);
        prop_assert!(p.prefix.starts_with(&header));
        let _ = prompt::remove_incomplete_block(&prefix);
        prop_assert_eq!(p.experiments, prompt::legacy_experiments());
    }

    #[test]
    fn prefix_based_prompt_never_panics(
        prefix in text(),
        suffix in text(),
        ctx in context_items(),
        limit in 0usize..300,
        percent in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(0.0), Just(0.3), Just(1.0), any::<f64>()],
    ) {
        let p = prompt::build_prefix_based_prompt(&prefix, &suffix, &ctx, limit, percent);
        prop_assert!(p.tokens.input_tokens + p.tokens.context_tokens_used <= limit);
        prop_assert!(suffix.starts_with(&p.suffix));
        if ctx.is_empty() {
            prop_assert!(prefix.ends_with(&p.prefix));
        }
    }

    #[test]
    fn raw_and_generations_prompts_never_panic(
        t in text(),
        file in text(),
        parts in context_items(),
        limit in 0usize..300,
    ) {
        let _ = prompt::check_raw_prompt(&t, limit);
        let _ = prompt::check_raw_prompt_parts(&parts, limit);
        let lang = Language::detect(&file, None);
        let _ = prompt::generations_lang_label(&file, lang);
        if let Ok(g) = prompt::build_generations_prompt(&t, &file, lang, limit) {
            prop_assert!(g.input_tokens <= limit);
            prop_assert!(g.prompt.starts_with("```"));
            prop_assert!(g.prompt.ends_with("\n```"));
        }
    }

    #[test]
    fn post_processing_never_panics(
        prefix in text(),
        completion in text(),
        excluded in proptest::collection::vec(
            prop_oneof![
                Just("clean_model_reflection".to_owned()),
                Just("strip_whitespaces".to_owned()),
                Just("fix_end_block_errors".to_owned()),
                any::<String>(),
            ],
            0..3,
        ),
    ) {
        let _ = post::post_process_vertex_completion(&prefix, &completion, &excluded);
        let _ = post::post_process_generation(&prefix, &completion);
        let _ = post::post_process_anthropic_generation(&completion);
        let _ = post::clean_model_reflection(&prefix, &completion);
        let _ = post::strip_code_block_markdown(&completion);
        let _ = post::prepend_new_line(&prefix, &completion);
        let _ = post::strip_asterisks(&completion);
        let _ = post::strip_whitespaces(&completion);
        let _ = PostProcessOp::from_name(&completion);
        // Nothing but the first (current) line is ever invented: the output
        // is made of the completion's own characters plus at most a newline
        // per line (the original's `\r` → `\r\n` quirk).
        let cleaned = post::clean_model_reflection(&prefix, &completion);
        let own = completion.chars().filter(|c| *c != '\n').count();
        prop_assert!(cleaned.chars().filter(|c| *c != '\n').count() <= own);
    }
}
