//! Programming-language detection for code suggestions (spec 5.1).
//!
//! The language decides three things on the wire and in the prompt: the
//! response field `lang` (lower-case enum name or `""`), the header comment the
//! legacy Vertex prompt starts with, and the fence label of the generations
//! prompt. The original resolves it from the file extension first and only
//! then from the editor's language id, so a `.py` file opened in an editor that
//! calls it `plaintext` is still Python.
//!
//! The extension is taken the way Python's `pathlib.PurePosixPath(name).suffix`
//! does it: from the last path component (after the last `/`, trailing slashes
//! ignored), after its last dot, and only when that dot is neither the first
//! nor the last character (`.bashrc` and `file.` have no extension). Matching is
//! case-sensitive, which is how `C` and `H` mean C++ while `c` and `h` mean C.

/// The 13 languages the original knows for code suggestions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    C,
    Cpp,
    CSharp,
    Go,
    Java,
    Js,
    Php,
    Python,
    Ruby,
    Rust,
    Scala,
    Ts,
    Kotlin,
}

/// How a language writes the one-line header comment of the legacy prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommentStyle {
    /// `/* text */`
    Block,
    /// `// text`
    DoubleSlash,
    /// `# text`
    Hash,
}

impl CommentStyle {
    /// Wraps `text` in this comment style, exactly as the original's
    /// `COMMENT_GENERATOR` does (one space inside the delimiters).
    pub fn wrap(self, text: &str) -> String {
        match self {
            CommentStyle::Block => format!("/* {text} */"),
            CommentStyle::DoubleSlash => format!("// {text}"),
            CommentStyle::Hash => format!("# {text}"),
        }
    }
}

impl Language {
    /// Every language, in the order of the original's enum.
    pub const ALL: [Language; 13] = [
        Language::C,
        Language::Cpp,
        Language::CSharp,
        Language::Go,
        Language::Java,
        Language::Js,
        Language::Php,
        Language::Python,
        Language::Ruby,
        Language::Rust,
        Language::Scala,
        Language::Ts,
        Language::Kotlin,
    ];

    /// Resolves the language: by the file extension, else by the editor's
    /// language id (only when the extension is unknown and the id is non-empty).
    pub fn detect(file_name: &str, editor_language: Option<&str>) -> Option<Language> {
        Self::from_extension(file_extension(file_name)).or_else(|| {
            editor_language
                .filter(|id| !id.is_empty())
                .and_then(Self::from_editor_language)
        })
    }

    /// The language of a file extension (without the dot; case-sensitive).
    pub fn from_extension(ext: &str) -> Option<Language> {
        Some(match ext {
            "c" | "h" => Language::C,
            "cpp" | "hpp" | "c++" | "h++" | "cc" | "hh" | "C" | "H" => Language::Cpp,
            "cs" => Language::CSharp,
            "go" => Language::Go,
            "java" => Language::Java,
            "js" | "jsx" => Language::Js,
            "php" | "php3" | "php4" | "php5" | "phps" | "phpt" => Language::Php,
            "py" => Language::Python,
            "rb" => Language::Ruby,
            "rs" => Language::Rust,
            "scala" => Language::Scala,
            "ts" | "tsx" => Language::Ts,
            "kts" | "kt" => Language::Kotlin,
            _ => return None,
        })
    }

    /// The language of a VS Code language identifier (case-sensitive, like the original).
    pub fn from_editor_language(id: &str) -> Option<Language> {
        Some(match id {
            "c" => Language::C,
            "cpp" => Language::Cpp,
            "csharp" => Language::CSharp,
            "go" => Language::Go,
            "java" => Language::Java,
            "javascript" | "javascriptreact" => Language::Js,
            "php" => Language::Php,
            "python" => Language::Python,
            "ruby" => Language::Ruby,
            "rust" => Language::Rust,
            "scala" => Language::Scala,
            "typescript" | "typescriptreact" => Language::Ts,
            "kotlin" => Language::Kotlin,
            _ => return None,
        })
    }

    /// The response `lang` value: the lower-case name of the original's enum member.
    pub fn lang_label(self) -> &'static str {
        match self {
            Language::C => "c",
            Language::Cpp => "cpp",
            Language::CSharp => "csharp",
            Language::Go => "go",
            Language::Java => "java",
            Language::Js => "js",
            Language::Php => "php",
            Language::Python => "python",
            Language::Ruby => "ruby",
            Language::Rust => "rust",
            Language::Scala => "scala",
            Language::Ts => "ts",
            Language::Kotlin => "kotlin",
        }
    }

    /// The human name used in the legacy prompt header ("... is written in C++.").
    pub fn display_name(self) -> &'static str {
        match self {
            Language::C => "C",
            Language::Cpp => "C++",
            Language::CSharp => "C#",
            Language::Go => "Go",
            Language::Java => "Java",
            Language::Js => "JavaScript",
            Language::Php => "PHP",
            Language::Python => "Python",
            Language::Ruby => "Ruby",
            Language::Rust => "Rust",
            Language::Scala => "Scala",
            Language::Ts => "TypeScript",
            Language::Kotlin => "Kotlin",
        }
    }

    /// The header comment style. This is the original's table, not a guess:
    /// `/* */` for C only, `#` for Python and Ruby, and `//` for everything
    /// else, including PHP (where `//` is a valid line comment), Rust, Scala and
    /// Kotlin.
    pub fn comment_style(self) -> CommentStyle {
        match self {
            Language::C => CommentStyle::Block,
            Language::Python | Language::Ruby => CommentStyle::Hash,
            Language::Cpp
            | Language::CSharp
            | Language::Go
            | Language::Java
            | Language::Js
            | Language::Php
            | Language::Rust
            | Language::Scala
            | Language::Ts
            | Language::Kotlin => CommentStyle::DoubleSlash,
        }
    }

    /// `text` as a one-line comment of this language.
    pub fn comment(self, text: &str) -> String {
        self.comment_style().wrap(text)
    }
}

/// The response `lang` field for an optional language: the label or `""`.
pub fn lang_label_or_empty(language: Option<Language>) -> &'static str {
    language.map(Language::lang_label).unwrap_or("")
}

/// The extension of a file name without the dot, following
/// `pathlib.PurePosixPath(file_name).suffix` (see the module docs); `""` when
/// there is none.
pub fn file_extension(file_name: &str) -> &str {
    let trimmed = file_name.trim_end_matches('/');
    let name = match trimmed.rfind('/') {
        Some(slash) => trimmed.get(slash + 1..).unwrap_or(""),
        None => trimmed,
    };
    match name.rfind('.') {
        // The dot is ASCII, so `dot + 1` is a char boundary.
        Some(dot) if dot > 0 && dot + 1 < name.len() => name.get(dot + 1..).unwrap_or(""),
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_extension_of_the_spec_table() {
        let table: &[(&[&str], Language)] = &[
            (&["c", "h"], Language::C),
            (
                &["cpp", "hpp", "c++", "h++", "cc", "hh", "C", "H"],
                Language::Cpp,
            ),
            (&["cs"], Language::CSharp),
            (&["go"], Language::Go),
            (&["java"], Language::Java),
            (&["js", "jsx"], Language::Js),
            (
                &["php", "php3", "php4", "php5", "phps", "phpt"],
                Language::Php,
            ),
            (&["py"], Language::Python),
            (&["rb"], Language::Ruby),
            (&["rs"], Language::Rust),
            (&["scala"], Language::Scala),
            (&["ts", "tsx"], Language::Ts),
            (&["kts", "kt"], Language::Kotlin),
        ];
        for (exts, lang) in table {
            for ext in *exts {
                assert_eq!(
                    Language::detect(&format!("src/file.{ext}"), None),
                    Some(*lang),
                    "{ext}"
                );
            }
        }
    }

    #[test]
    fn every_editor_id_of_the_spec_table() {
        let table = [
            ("c", Language::C),
            ("cpp", Language::Cpp),
            ("csharp", Language::CSharp),
            ("go", Language::Go),
            ("java", Language::Java),
            ("javascript", Language::Js),
            ("javascriptreact", Language::Js),
            ("php", Language::Php),
            ("python", Language::Python),
            ("ruby", Language::Ruby),
            ("rust", Language::Rust),
            ("scala", Language::Scala),
            ("typescript", Language::Ts),
            ("typescriptreact", Language::Ts),
            ("kotlin", Language::Kotlin),
        ];
        for (id, lang) in table {
            assert_eq!(Language::detect("Makefile", Some(id)), Some(lang), "{id}");
        }
    }

    #[test]
    fn extension_is_case_sensitive() {
        assert_eq!(Language::detect("a.c", None), Some(Language::C));
        assert_eq!(Language::detect("a.C", None), Some(Language::Cpp));
        assert_eq!(Language::detect("a.h", None), Some(Language::C));
        assert_eq!(Language::detect("a.H", None), Some(Language::Cpp));
        assert_eq!(Language::detect("a.PY", None), None);
        assert_eq!(Language::detect("a.Rs", None), None);
    }

    #[test]
    fn extension_wins_over_editor_language() {
        assert_eq!(
            Language::detect("main.go", Some("python")),
            Some(Language::Go)
        );
    }

    #[test]
    fn editor_language_is_only_a_fallback() {
        assert_eq!(
            Language::detect("notes.txt", Some("ruby")),
            Some(Language::Ruby)
        );
        assert_eq!(Language::detect("notes.txt", Some("")), None);
        assert_eq!(Language::detect("notes.txt", None), None);
        assert_eq!(Language::detect("notes.txt", Some("Python")), None);
        assert_eq!(Language::detect("notes.txt", Some("plaintext")), None);
    }

    #[test]
    fn extension_after_the_last_dot() {
        assert_eq!(
            Language::detect("archive.tar.py", None),
            Some(Language::Python)
        );
        assert_eq!(Language::detect("x.py.txt", None), None);
        assert_eq!(file_extension("a.b.c"), "c");
    }

    #[test]
    fn extension_follows_pathlib_suffix() {
        assert_eq!(file_extension(""), "");
        assert_eq!(file_extension("Makefile"), "");
        assert_eq!(file_extension(".bashrc"), "");
        assert_eq!(file_extension(".py"), "");
        assert_eq!(file_extension("file."), "");
        assert_eq!(file_extension("."), "");
        assert_eq!(file_extension(".."), "");
        assert_eq!(file_extension("dir.rs/file"), "");
        assert_eq!(file_extension("dir/file.rs"), "rs");
        assert_eq!(file_extension("dir/file.rs/"), "rs");
        assert_eq!(file_extension("/"), "");
        assert_eq!(file_extension("a/.hidden"), "");
        assert_eq!(file_extension("a/b.tsx"), "tsx");
        assert_eq!(file_extension("win\\path\\main.py"), "py");
        assert_eq!(file_extension("ünï.cödé"), "cödé");
        assert_eq!(Language::detect(".py", Some("ruby")), Some(Language::Ruby));
    }

    #[test]
    fn labels_and_names() {
        let expected = [
            (Language::C, "c", "C"),
            (Language::Cpp, "cpp", "C++"),
            (Language::CSharp, "csharp", "C#"),
            (Language::Go, "go", "Go"),
            (Language::Java, "java", "Java"),
            (Language::Js, "js", "JavaScript"),
            (Language::Php, "php", "PHP"),
            (Language::Python, "python", "Python"),
            (Language::Ruby, "ruby", "Ruby"),
            (Language::Rust, "rust", "Rust"),
            (Language::Scala, "scala", "Scala"),
            (Language::Ts, "ts", "TypeScript"),
            (Language::Kotlin, "kotlin", "Kotlin"),
        ];
        assert_eq!(expected.len(), Language::ALL.len());
        for (lang, label, name) in expected {
            assert_eq!(lang.lang_label(), label);
            assert_eq!(lang.display_name(), name);
        }
        assert_eq!(lang_label_or_empty(None), "");
        assert_eq!(lang_label_or_empty(Some(Language::Ts)), "ts");
    }

    #[test]
    fn comment_forms() {
        assert_eq!(Language::C.comment("hi"), "/* hi */");
        assert_eq!(Language::Python.comment("hi"), "# hi");
        assert_eq!(Language::Ruby.comment("hi"), "# hi");
        for lang in [
            Language::Cpp,
            Language::CSharp,
            Language::Go,
            Language::Java,
            Language::Js,
            Language::Php,
            Language::Rust,
            Language::Scala,
            Language::Ts,
            Language::Kotlin,
        ] {
            assert_eq!(lang.comment("hi"), "// hi", "{lang:?}");
        }
        assert_eq!(Language::Go.comment(""), "// ");
    }

    #[test]
    fn every_label_resolves_back_to_its_language() {
        for lang in Language::ALL {
            let label = lang.lang_label();
            let back = Language::from_extension(label)
                .filter(|l| *l == lang)
                .or_else(|| Language::from_editor_language(label));
            assert_eq!(back, Some(lang), "{label}");
        }
    }
}
