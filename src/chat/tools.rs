//! The tools Duo Chat's ReAct agent may choose. GitLab runs them (the gateway only names them in
//! the prompt and passes the model's choice back as an `action`), so a tool here is a name, what
//! it reads, the unit primitive a user needs for it, the lowest GitLab version whose Rails knows
//! it, and the description and example the model is shown.
//!
//! Which tools a request gets follows the original: in this order `build_reader`, `epic_reader`,
//! `issue_reader`, `merge_request_reader`, `gitlab_documentation`, and `commit_reader` only when
//! the request enables the feature flag `ai_commit_reader_for_chat`; a debug user gets every one
//! of them; anyone else only those whose unit primitive the token holds and whose minimum
//! version `X-Gitlab-Version` reaches (PEP 440; a missing header reaches none).
//! Self-hosted deployments (custom models enabled) get a `gitlab_documentation` whose example
//! asks for short keyword inputs, as the original's `SelfHostedGitlabDocumentation` does.

use crate::auth::user::User;
use crate::chat::version;

/// One tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    /// The name the model answers in `Action:`.
    pub name: &'static str,
    /// What it reads, listed in the prompt's resources.
    pub resource: &'static str,
    /// The unit primitive a user needs.
    pub unit_primitive: &'static str,
    /// The lowest GitLab version that runs it.
    pub min_version: Option<&'static str>,
    /// The feature flag that must be on, if any.
    pub feature_flag: Option<&'static str>,
    /// Shown to the model.
    pub description: &'static str,
    /// A worked example shown to the model.
    pub example: &'static str,
}

/// The feature flag that adds `commit_reader`.
pub const COMMIT_READER_FLAG: &str = "ai_commit_reader_for_chat";

/// Every tool, in the order the prompt lists them.
pub const TOOLS: &[Tool] = &[
    Tool {
        name: "build_reader",
        resource: "builds",
        unit_primitive: "ask_build",
        min_version: Some("17.5.0-pre"),
        feature_flag: None,
        description: "Reads one CI build (job), and only when the user gives its ID or URL, or is \
looking at its page. Never use it to search for builds by description or keyword; without an \
identifier, say that you cannot look builds up.\nAction Input: the user's original question.",
        example: "Question: Why did build 123 fail?\nThought: The question is about a specific \
build, so I read it with \"build_reader\".\nAction: build_reader\nAction Input: Why did build 123 \
fail?",
    },
    Tool {
        name: "epic_reader",
        resource: "epics",
        unit_primitive: "ask_epic",
        min_version: None,
        feature_flag: None,
        description: "Reads one epic or work item, and only when the user gives its ID or URL, or \
is looking at its page. Never use it to search for epics by description or keyword; without an \
identifier, say that you cannot look epics up.\nAction Input: the user's original question.",
        example: "Question: Who created epic &123?\nThought: The question is about a specific \
epic, so I read it with \"epic_reader\".\nAction: epic_reader\nAction Input: Who created epic \
&123?",
    },
    Tool {
        name: "issue_reader",
        resource: "issues",
        unit_primitive: "ask_issue",
        min_version: None,
        feature_flag: None,
        description: "Reads one issue, and only when the user gives its ID or URL, or is looking \
at its page. Never use it to search for issues by description or keyword; without an identifier, \
say that you cannot look issues up.\nAction Input: the user's original question.",
        example: "Question: Who created issue #123?\nThought: The question is about a specific \
issue, so I read it with \"issue_reader\".\nAction: issue_reader\nAction Input: Who created issue \
#123?",
    },
    Tool {
        name: "merge_request_reader",
        resource: "merge_requests",
        unit_primitive: "ask_merge_request",
        min_version: Some("17.5.0-pre"),
        feature_flag: None,
        description: "Reads one merge request, and only when the user gives its ID or URL, or is \
looking at its page. Never use it to search for merge requests by description or keyword; \
without an identifier, say that you cannot look merge requests up.\nAction Input: the user's \
original question.",
        example: "Question: Who wrote merge request !123?\nThought: The question is about a \
specific merge request, so I read it with \"merge_request_reader\".\nAction: \
merge_request_reader\nAction Input: Who wrote merge request !123?",
    },
    Tool {
        name: "gitlab_documentation",
        resource: "documentation answers",
        unit_primitive: "documentation_search",
        min_version: None,
        feature_flag: None,
        description: "Answers questions about GitLab itself and how to use it: projects, groups, \
issues, merge requests, epics, work items, milestones, labels, CI/CD pipelines, repositories and \
the rest of the product.",
        example: "Question: How do I set up a new project?\nThought: The question is about how \
GitLab works, so \"gitlab_documentation\" is the tool.\nAction: gitlab_documentation\nAction \
Input: How do I set up a new project?",
    },
    Tool {
        name: "commit_reader",
        resource: "commits",
        unit_primitive: "ask_commit",
        min_version: Some("17.5.0-pre"),
        feature_flag: Some(COMMIT_READER_FLAG),
        description: "Reads one commit, and only when the user gives its SHA or URL, or is \
looking at its page. Never use it to search for commits by description or keyword; without an \
identifier, say that you cannot look commits up.\nAction Input: the user's original question.",
        example: "Question: Who authored commit 1a2b3c?\nThought: The question is about a \
specific commit, so I read it with \"commit_reader\".\nAction: commit_reader\nAction Input: Who \
authored commit 1a2b3c?",
    },
];

/// `gitlab_documentation` as self-hosted deployments (custom models enabled) offer it: the
/// documentation is searched locally by keywords, so the model is shown short action inputs.
pub const SELF_HOSTED_DOCUMENTATION: Tool = Tool {
    name: "gitlab_documentation",
    resource: "documentation answers",
    unit_primitive: "documentation_search",
    min_version: None,
    feature_flag: None,
    description: "Answers questions about GitLab itself and how to use it: projects, groups, \
issues, merge requests, epics, work items, milestones, labels, CI/CD pipelines, repositories and \
the rest of the product.",
    example: "Question: How do I set up a new project?\nThought: The question is about how \
GitLab works, so \"gitlab_documentation\" is the tool. I keep the action input to the few words \
of its intent, without punctuation: 'How do I set up a project?' becomes 'set up project', 'Can \
you help me open a merge request?' becomes 'create merge request'.\nAction: \
gitlab_documentation\nAction Input: set up project",
};

/// The tools offered to `user` on GitLab `gl_version` with `flags` enabled; `self_hosted`
/// (custom models enabled) swaps in [`SELF_HOSTED_DOCUMENTATION`].
pub fn offered(
    user: &User,
    gl_version: &str,
    flag_enabled: impl Fn(&str) -> bool,
    self_hosted: bool,
) -> Vec<&'static Tool> {
    TOOLS
        .iter()
        .map(|t| {
            if self_hosted && t.name == SELF_HOSTED_DOCUMENTATION.name {
                &SELF_HOSTED_DOCUMENTATION
            } else {
                t
            }
        })
        .filter(|t| t.feature_flag.is_none_or(&flag_enabled))
        .filter(|t| {
            user.is_debug
                || (user.can(t.unit_primitive, &[]) && version::at_least(t.min_version, gl_version))
        })
        .collect()
}

/// `CamelCase` as `snake_case` (`IssueReader` → `issue_reader`).
pub fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The offered tool the model named: by its name, or by its name in `CamelCase` (the original
/// only knows `MergeRequestReader`; see docs/compatibility.md).
pub fn find<'a>(offered: &[&'a Tool], name: &str) -> Option<&'a Tool> {
    offered
        .iter()
        .find(|t| t.name == name)
        .or_else(|| {
            let snake = snake_case(name);
            offered.iter().find(|t| t.name == snake)
        })
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::user::Claims;

    fn user(scopes: &[&str]) -> User {
        User::authenticated(
            Claims {
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                ..Claims::default()
            },
            None,
        )
    }

    fn names(tools: &[&Tool]) -> Vec<&'static str> {
        tools.iter().map(|t| t.name).collect()
    }

    #[test]
    fn tools_follow_scopes_versions_and_flags() {
        let all = [
            "ask_build",
            "ask_epic",
            "ask_issue",
            "ask_merge_request",
            "documentation_search",
            "ask_commit",
        ];
        let on = |_: &str| true;
        let off = |_: &str| false;
        assert_eq!(
            names(&offered(&user(&all), "17.5.0-pre", on, false)),
            vec![
                "build_reader",
                "epic_reader",
                "issue_reader",
                "merge_request_reader",
                "gitlab_documentation",
                "commit_reader"
            ]
        );
        assert_eq!(
            names(&offered(&user(&all), "17.4.2", off, false)),
            vec!["epic_reader", "issue_reader", "gitlab_documentation"]
        );
        assert_eq!(
            names(&offered(&user(&all), "", on, false)),
            vec!["epic_reader", "issue_reader", "gitlab_documentation"],
            "no version header: no version-gated tool"
        );
        assert_eq!(
            names(&offered(&user(&["ask_issue"]), "18.0.0", on, false)),
            vec!["issue_reader"]
        );
        assert_eq!(
            names(&offered(&User::debug(None), "", off, false)),
            vec![
                "build_reader",
                "epic_reader",
                "issue_reader",
                "merge_request_reader",
                "gitlab_documentation"
            ]
        );
    }

    /// The original's `ai_gateway/chat/tools/gitlab.py` (`name`, `resource`, `unit_primitive`,
    /// `min_required_gl_version`) and `chat/toolset.py` (order; `commit_reader` behind
    /// `ai_commit_reader_for_chat`, `build_reader` unflagged).
    #[test]
    fn tools_are_the_originals() {
        let table: Vec<_> = TOOLS
            .iter()
            .chain([&SELF_HOSTED_DOCUMENTATION])
            .map(|t| {
                (
                    t.name,
                    t.resource,
                    t.unit_primitive,
                    t.min_version,
                    t.feature_flag,
                )
            })
            .collect();
        assert_eq!(
            table,
            vec![
                (
                    "build_reader",
                    "builds",
                    "ask_build",
                    Some("17.5.0-pre"),
                    None
                ),
                ("epic_reader", "epics", "ask_epic", None, None),
                ("issue_reader", "issues", "ask_issue", None, None),
                (
                    "merge_request_reader",
                    "merge_requests",
                    "ask_merge_request",
                    Some("17.5.0-pre"),
                    None
                ),
                (
                    "gitlab_documentation",
                    "documentation answers",
                    "documentation_search",
                    None,
                    None
                ),
                (
                    "commit_reader",
                    "commits",
                    "ask_commit",
                    Some("17.5.0-pre"),
                    Some("ai_commit_reader_for_chat")
                ),
                (
                    "gitlab_documentation",
                    "documentation answers",
                    "documentation_search",
                    None,
                    None
                ),
            ]
        );
        // Each tool is offered for its own unit primitive alone, and below 17.5.0-pre only
        // if it has no minimum version.
        for (scope, name, ungated) in [
            ("ask_build", "build_reader", false),
            ("ask_epic", "epic_reader", true),
            ("ask_issue", "issue_reader", true),
            ("ask_merge_request", "merge_request_reader", false),
            ("documentation_search", "gitlab_documentation", true),
            ("ask_commit", "commit_reader", false),
        ] {
            let on = |_: &str| true;
            assert_eq!(
                names(&offered(&user(&[scope]), "17.5.0-pre", on, false)),
                vec![name],
                "{scope}"
            );
            let below = names(&offered(&user(&[scope]), "17.4.9", on, false));
            assert_eq!(below == vec![name], ungated, "{scope} at 17.4.9");
        }
    }

    #[test]
    fn self_hosted_deployments_get_their_documentation_tool() {
        let tools = offered(&User::debug(None), "", |_| false, true);
        let docs = find(&tools, "gitlab_documentation").unwrap();
        assert_eq!(docs, &SELF_HOSTED_DOCUMENTATION);
        assert!(docs.example.ends_with("Action Input: set up project"));
        assert_eq!(tools.len(), 5);
    }

    #[test]
    fn camel_case_names_find_their_tool() {
        let tools = offered(&User::debug(None), "", |_| true, false);
        assert_eq!(
            find(&tools, "issue_reader").map(|t| t.name),
            Some("issue_reader")
        );
        assert_eq!(
            find(&tools, "IssueReader").map(|t| t.name),
            Some("issue_reader")
        );
        assert_eq!(
            find(&tools, "GitlabDocumentation").map(|t| t.name),
            Some("gitlab_documentation")
        );
        assert_eq!(find(&tools, "summarize"), None);
        assert_eq!(snake_case("MergeRequestReader"), "merge_request_reader");
    }
}
