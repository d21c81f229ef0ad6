//! The unit primitives (token scopes) the gateway knows, and the feature category of each one
//! that may be used through the provider proxies (spec 2.5).
//!
//! A prompt definition naming an unknown unit primitive is refused at startup; a proxy request
//! naming one is a 400 `Unknown unit primitive header <v>`; one that is known but has no proxy
//! feature category is a 400 `This endpoint cannot be used for <v> purpose`.

/// Every unit primitive of cloud-connector 1.7.0 that the original's code and prompts use.
pub const ALL: &[&str] = &[
    "ask_build",
    "ask_commit",
    "ask_epic",
    "ask_issue",
    "ask_merge_request",
    "amazon_q_integration",
    "categorize_duo_chat_question",
    "code_suggestions",
    "complete_code",
    "documentation_search",
    "duo_chat",
    "duo_workflow_generate_token",
    "duo_workflow_execute_workflow",
    "explain_code",
    "explain_vulnerability",
    "fill_in_merge_request_template",
    "fix_code",
    "generate_code",
    "generate_commit_message",
    "generate_cube_query",
    "generate_issue_description",
    "glab_ask_git_command",
    "include_file_context",
    "include_issue_context",
    "include_merge_request_context",
    "include_snippet_context",
    "include_dependency_context",
    "include_local_git_context",
    "measure_comment_temperature",
    "refactor_code",
    "resolve_vulnerability",
    "review_merge_request",
    "semantic_search_issue",
    "summarize_comments",
    "summarize_issue_discussions",
    "summarize_merge_request",
    "summarize_new_merge_request",
    "summarize_review",
    "summarize_submitted_review",
    "troubleshoot_job",
    "write_tests",
];

/// Whether `name` is a known unit primitive.
pub fn is_known(name: &str) -> bool {
    ALL.contains(&name)
}

/// The feature category of a unit primitive usable through the proxies, `None` for the others.
pub fn proxy_feature_category(name: &str) -> Option<&'static str> {
    Some(match name {
        "ask_build"
        | "ask_commit"
        | "ask_epic"
        | "ask_issue"
        | "ask_merge_request"
        | "categorize_duo_chat_question"
        | "documentation_search"
        | "duo_chat"
        | "fix_code"
        | "refactor_code"
        | "write_tests" => "duo_chat",
        "explain_code" => "source_code_management",
        "explain_vulnerability" | "resolve_vulnerability" => "vulnerability_management",
        "fill_in_merge_request_template"
        | "generate_commit_message"
        | "glab_ask_git_command"
        | "review_merge_request"
        | "summarize_issue_discussions"
        | "summarize_merge_request"
        | "summarize_review"
        | "summarize_submitted_review" => "code_review_workflow",
        "generate_cube_query" => "product_analytics_visualization",
        "generate_issue_description" | "summarize_comments" => "team_planning",
        "semantic_search_issue" => "global_search",
        "troubleshoot_job" => "continuous_integration",
        _ => return None,
    })
}

/// What requests made for a unit primitive are expected to do, in our words: the abuse detector
/// (spec 9.2) compares a sampled proxy request with it. `None` for unit primitives that cannot be
/// used through the proxies.
pub fn description(name: &str) -> Option<&'static str> {
    Some(match name {
        "ask_build" => "Asking Duo Chat about a CI/CD job (build) and its log.",
        "ask_commit" => "Asking Duo Chat about a git commit and its changes.",
        "ask_epic" => "Asking Duo Chat about a GitLab epic.",
        "ask_issue" => "Asking Duo Chat about a GitLab issue.",
        "ask_merge_request" => "Asking Duo Chat about a GitLab merge request.",
        "categorize_duo_chat_question" => {
            "Classifying a question asked to Duo Chat into categories and labels."
        }
        "documentation_search" => "Searching the GitLab documentation to answer a question.",
        "duo_chat" => {
            "Asking a coding assistant questions about software development or how to use GitLab."
        }
        "fix_code" => "Fixing problems in a piece of source code.",
        "refactor_code" => "Refactoring or improving a piece of source code.",
        "write_tests" => "Writing tests for a piece of source code.",
        "explain_code" => "Explaining what a piece of source code does.",
        "explain_vulnerability" => {
            "Explaining a security vulnerability found in the user's code and how it could be exploited."
        }
        "resolve_vulnerability" => {
            "Resolving a security vulnerability (a CVE or a finding) in the given source code."
        }
        "fill_in_merge_request_template" => {
            "Filling in a merge request description template from the merge request's changes."
        }
        "generate_commit_message" => "Writing a git commit message for a diff.",
        "glab_ask_git_command" => "Turning a plain-language request into git commands.",
        "review_merge_request" => "Reviewing the changes of a merge request and commenting on them.",
        "summarize_issue_discussions" => "Summarizing the discussion in a GitLab issue.",
        "summarize_merge_request" => "Summarizing the changes of a merge request.",
        "summarize_review" => "Summarizing the comments of a merge request review.",
        "summarize_submitted_review" => "Summarizing a merge request review that was submitted.",
        "generate_cube_query" => {
            "Turning a question about product analytics data into a Cube query."
        }
        "generate_issue_description" => "Writing the description of a GitLab issue.",
        "summarize_comments" => "Summarizing the comments of a GitLab issue or epic.",
        "semantic_search_issue" => "Finding GitLab issues related to a text.",
        "troubleshoot_job" => "Finding why a CI/CD job failed from its log and how to fix it.",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_proxy_primitive_is_known() {
        for up in ALL {
            if let Some(category) = proxy_feature_category(up) {
                assert!(!category.is_empty());
            }
        }
        assert_eq!(proxy_feature_category("complete_code"), None);
        assert_eq!(
            proxy_feature_category("explain_vulnerability"),
            Some("vulnerability_management")
        );
        assert!(is_known("include_local_git_context"));
        for up in ALL {
            assert_eq!(
                description(up).is_some(),
                proxy_feature_category(up).is_some(),
                "{up}: every proxy unit primitive, and only those, has a description"
            );
        }
        assert!(!is_known("make_coffee"));
    }
}
