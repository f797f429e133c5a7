//! Keyword normalisation: the one place that decides which spellings share a key.

/// The longest keyword accepted, in bytes of its normalised form.
pub const MAX_KEYWORD_BYTES: usize = 256;

/// Trims and lowercases a keyword, Unicode-aware, so that "Python", " python " and
/// "PYTHON" name one key. Everything else is kept as data: emoji, CJK, `#`, `:` and glob
/// characters such as `*` are never interpreted, because keys are built by concatenation
/// and no pattern is ever built from a keyword.
pub fn normalize_keyword(keyword: &str) -> String {
    keyword.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_surrounding_space_fold_to_one_key() {
        for spelling in ["Python", " python ", "PYTHON", "\tpyThon\n"] {
            assert_eq!(normalize_keyword(spelling), "python");
        }
    }

    #[test]
    fn unicode_is_lowercased_and_kept() {
        assert_eq!(normalize_keyword("ÜBER Straße"), "über straße");
        assert_eq!(normalize_keyword("ΣΊΣΥΦΟΣ"), "σίσυφος");
        assert_eq!(normalize_keyword("東京 🚀"), "東京 🚀");
    }

    #[test]
    fn glob_and_separator_characters_are_data() {
        assert_eq!(normalize_keyword("#RustLang"), "#rustlang");
        assert_eq!(normalize_keyword("K8s*"), "k8s*");
        assert_eq!(normalize_keyword("a:b?[c]"), "a:b?[c]");
    }
}
