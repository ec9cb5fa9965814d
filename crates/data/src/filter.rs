//! Which articles are about a Pokémon: the title equals one of the names.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use crate::{Article, DataError};

/// How a title is compared with the names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterMode {
    /// The course: `title.lower()` in `{name.lower() for name in names}`, no
    /// trimming, no Unicode normalisation.
    Exact,
    /// Also Unicode NFC and surrounding whitespace trimmed, on both sides, so
    /// `Évoli` written with a combining accent still matches.
    Normalized,
}

/// Matches titles against a set of names.
#[derive(Debug, Clone)]
pub struct NameMatcher {
    mode: FilterMode,
    keys: HashSet<String>,
}

impl NameMatcher {
    /// A matcher over `names`.
    pub fn new(names: &[String], mode: FilterMode) -> Self {
        let keys = names.iter().map(|n| key(n, mode)).collect();
        Self { mode, keys }
    }

    /// The comparison key of a title or name under this matcher's mode.
    pub fn key(&self, text: &str) -> String {
        key(text, self.mode)
    }

    /// Whether `title` is one of the names.
    pub fn matches(&self, title: &str) -> bool {
        self.keys.contains(&self.key(title))
    }
}

fn key(text: &str, mode: FilterMode) -> String {
    match mode {
        // Rust's `to_lowercase` follows the same Unicode rules as Python's
        // `str.lower` (final sigma included).
        FilterMode::Exact => text.to_lowercase(),
        FilterMode::Normalized => text.trim().nfc().collect::<String>().to_lowercase(),
    }
}

/// The outcome of filtering.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Articles whose title is a name, in corpus order (first of duplicates only).
    pub kept: Vec<Article>,
    /// Titles of the other articles, in corpus order, with their lengths.
    pub excluded: Vec<Article>,
    /// Kept titles that repeat an earlier kept title (dropped).
    pub duplicates: Vec<String>,
    /// The names, as the later stages use them (deduplicated; NFC and trimmed
    /// under `normalized`).
    pub names: Vec<String>,
    /// How many names have no article.
    pub names_without_article: usize,
}

/// Keeps the articles whose title is one of `names`.
pub fn select(articles: &[Article], names: &[String], mode: FilterMode) -> Result<Selection, DataError> {
    let matcher = NameMatcher::new(names, mode);
    let mut seen = HashSet::new();
    let (mut kept, mut excluded, mut duplicates) = (Vec::new(), Vec::new(), Vec::new());
    for article in articles {
        if matcher.matches(&article.title) {
            if seen.insert(matcher.key(&article.title)) {
                kept.push(article.clone());
            } else {
                duplicates.push(article.title.clone());
            }
        } else {
            excluded.push(article.clone());
        }
    }
    if !duplicates.is_empty() {
        tracing::warn!(
            "{} duplicated title(s) among the kept articles, only the first of each is kept: {}",
            duplicates.len(),
            duplicates.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if kept.is_empty() {
        let hint = if mode == FilterMode::Exact
            && articles.iter().any(|a| NameMatcher::new(names, FilterMode::Normalized).matches(&a.title))
        {
            "some titles match only after Unicode normalisation or trimming: try --set data.filter=normalized"
                .to_string()
        } else {
            let sample =
                |items: Vec<&str>| items.into_iter().take(3).map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
            format!(
                "is data.names the right file for these articles? first titles: {}; first names: {}",
                sample(articles.iter().map(|a| a.title.as_str()).collect()),
                sample(names.iter().map(String::as_str).collect()),
            )
        };
        return Err(DataError::NothingKept { total: articles.len(), names: names.len(), hint });
    }
    let mut name_seen = HashSet::new();
    let names: Vec<String> = names
        .iter()
        .map(|n| match mode {
            FilterMode::Exact => n.clone(),
            FilterMode::Normalized => n.trim().nfc().collect(),
        })
        .filter(|n| !n.is_empty() && name_seen.insert(n.clone()))
        .collect();
    let names_without_article = names.iter().filter(|n| !seen.contains(&matcher.key(n))).count();
    Ok(Selection { kept, excluded, duplicates, names, names_without_article })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn article(title: &str) -> Article {
        Article { title: title.to_string(), content: format!("{title} est un Pokémon.") }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_mode_is_case_insensitive_but_nothing_else() {
        let nfd_evoli = "E\u{301}voli"; // É as E + combining acute
        let corpus = [
            article("PIKACHU"),
            article("Nidoran♀"),
            article("M. Mime"),
            article(nfd_evoli),
            article(" Salamèche"),
            article("Carapuce à O"),
            article("Mime Jr."),
        ];
        let list = names(&["Pikachu", "Nidoran♀", "M. Mime", "Évoli", "Salamèche", "Carapuce", "Mime Jr."]);
        let exact = select(&corpus, &list, FilterMode::Exact).unwrap();
        let titles: Vec<_> = exact.kept.iter().map(|a| a.title.as_str()).collect();
        assert_eq!(titles, ["PIKACHU", "Nidoran♀", "M. Mime", "Mime Jr."]);
        assert_eq!(exact.excluded.len(), 3, "NFD title, padded title and prefix match are excluded");

        let normalized = select(&corpus, &list, FilterMode::Normalized).unwrap();
        assert_eq!(normalized.kept.len(), 6, "NFC and trimming recover two, the prefix match stays out");
        assert!(normalized.kept.iter().all(|a| a.title != "Carapuce à O"));
    }

    #[test]
    fn duplicates_keep_the_first() {
        let corpus = [article("Pikachu"), article("pikachu"), article("Raichu")];
        let sel = select(&corpus, &names(&["Pikachu", "Raichu", "Mew"]), FilterMode::Exact).unwrap();
        assert_eq!(sel.kept.len(), 2);
        assert_eq!(sel.kept[0].title, "Pikachu");
        assert_eq!(sel.duplicates, ["pikachu"]);
        assert_eq!(sel.names_without_article, 1);
    }

    #[test]
    fn nothing_kept_explains_why() {
        let corpus = [article("Charge"), article("Bourg Palette")];
        let err = select(&corpus, &names(&["Pikachu"]), FilterMode::Exact).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("no article was kept") && msg.contains("data.names"), "{msg}");

        let err = select(&[article("E\u{301}voli")], &names(&["Évoli"]), FilterMode::Exact).unwrap_err();
        assert!(err.to_string().contains("data.filter=normalized"), "{err}");
    }

    #[test]
    fn normalized_names_are_nfc_trimmed_and_unique() {
        let corpus = [article("Évoli")];
        let sel = select(&corpus, &names(&[" E\u{301}voli ", "Évoli", "Mew"]), FilterMode::Normalized).unwrap();
        assert_eq!(sel.names, ["Évoli", "Mew"]);
    }
}
