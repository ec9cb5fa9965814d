//! The numbers the exploration notebook shows about the corpus and the filter.

use serde::{Deserialize, Serialize};

use crate::Article;
use crate::filter::Selection;

/// Length statistics of a set of articles (content only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LengthStats {
    /// Number of articles.
    pub count: usize,
    /// Total characters (Unicode scalar values).
    pub chars_total: usize,
    /// Mean characters per article.
    pub chars_mean: f64,
    /// Median characters per article.
    pub chars_median: f64,
    /// Shortest article, in characters.
    pub chars_min: usize,
    /// Longest article, in characters.
    pub chars_max: usize,
    /// Mean whitespace-separated words per article.
    pub words_mean: f64,
}

impl LengthStats {
    /// The statistics of `articles`.
    pub fn of(articles: &[Article]) -> Self {
        if articles.is_empty() {
            return Self::default();
        }
        let mut chars: Vec<usize> = articles.iter().map(|a| a.content.chars().count()).collect();
        let words: usize = articles.iter().map(|a| a.content.split_whitespace().count()).sum();
        chars.sort_unstable();
        let n = chars.len();
        let median = if n % 2 == 1 { chars[n / 2] as f64 } else { (chars[n / 2 - 1] + chars[n / 2]) as f64 / 2.0 };
        let total: usize = chars.iter().sum();
        Self {
            count: n,
            chars_total: total,
            chars_mean: total as f64 / n as f64,
            chars_median: median,
            chars_min: chars[0],
            chars_max: chars[n - 1],
            words_mean: words as f64 / n as f64,
        }
    }
}

/// A title with the beginning of its content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Excerpt {
    /// The article's title.
    pub title: String,
    /// Its first 400 characters.
    pub excerpt: String,
}

impl Excerpt {
    fn of(article: &Article) -> Self {
        Self { title: article.title.clone(), excerpt: article.content.chars().take(400).collect() }
    }
}

/// The data stage's headline numbers (stored in the manifest's `stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataStats {
    /// Articles read.
    pub total: usize,
    /// Articles kept (title is a name), duplicates dropped.
    pub kept: usize,
    /// Articles excluded.
    pub excluded: usize,
    /// `kept / total`.
    pub kept_ratio: f64,
    /// Kept titles that repeated an earlier one (dropped).
    pub duplicates: usize,
    /// Names read (after deduplication).
    pub names: usize,
    /// Names with no article.
    pub names_without_article: usize,
    /// Training articles.
    pub train: usize,
    /// Validation articles.
    pub valid: usize,
    /// The first 10 kept titles.
    pub kept_titles: Vec<String>,
    /// The first 15 excluded titles.
    pub excluded_titles: Vec<String>,
    /// Titles at the positions the notebook samples (0, 100, 500, 1000, 2000, 5000, 10000).
    pub sample_titles: Vec<(usize, String)>,
    /// Lengths of the kept articles.
    pub kept_lengths: LengthStats,
    /// Lengths of the excluded articles.
    pub excluded_lengths: LengthStats,
    /// The first kept article, for the Pokémon-vs-other comparison.
    pub kept_example: Excerpt,
    /// The first excluded article.
    pub excluded_example: Excerpt,
}

impl DataStats {
    /// The statistics of one filtering.
    pub fn compute(articles: &[Article], selection: &Selection, train: usize, valid: usize) -> Self {
        let total = articles.len();
        Self {
            total,
            kept: selection.kept.len(),
            excluded: selection.excluded.len(),
            kept_ratio: if total == 0 { 0.0 } else { selection.kept.len() as f64 / total as f64 },
            duplicates: selection.duplicates.len(),
            names: selection.names.len(),
            names_without_article: selection.names_without_article,
            train,
            valid,
            kept_titles: selection.kept.iter().take(10).map(|a| a.title.clone()).collect(),
            excluded_titles: selection.excluded.iter().take(15).map(|a| a.title.clone()).collect(),
            sample_titles: [0, 100, 500, 1000, 2000, 5000, 10000]
                .into_iter()
                .filter_map(|i| articles.get(i).map(|a| (i, a.title.clone())))
                .collect(),
            kept_lengths: LengthStats::of(&selection.kept),
            excluded_lengths: LengthStats::of(&selection.excluded),
            kept_example: selection.kept.first().map(Excerpt::of).unwrap_or_default(),
            excluded_example: selection.excluded.first().map(Excerpt::of).unwrap_or_default(),
        }
    }

    /// The filter result as the notebook prints it.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let line = "═".repeat(50);
        out += &format!("{line}\nFilter result\n{line}\n");
        out += &format!("Total articles       : {:>7}\n", group(self.total));
        out += &format!("Pokémon articles     : {:>7} kept\n", group(self.kept));
        out += &format!("Other articles       : {:>7} excluded\n", group(self.excluded));
        out += &format!("Pokémon ratio        : {:>6.1}%\n", 100.0 * self.kept_ratio);
        out += &format!("Split                : {} train, {} validation\n", self.train, self.valid);
        out += &format!("Names                : {} ({} without an article)\n", self.names, self.names_without_article);
        if self.duplicates > 0 {
            out += &format!("Duplicated titles    : {} (first kept)\n", self.duplicates);
        }
        out += "\n                      articles   mean chars  median    min     max\n";
        for (label, l) in [("kept (Pokémon)", &self.kept_lengths), ("excluded", &self.excluded_lengths)] {
            out += &format!(
                "{label:<20} {:>9} {:>12.1} {:>7.1} {:>6} {:>7}\n",
                l.count, l.chars_mean, l.chars_median, l.chars_min, l.chars_max
            );
        }
        out += &format!("\nKept (first {}): {}\n", self.kept_titles.len(), self.kept_titles.join(", "));
        out += &format!("Excluded (first {}): {}\n", self.excluded_titles.len(), self.excluded_titles.join(", "));
        out
    }
}

/// `12345` → `12,345`.
pub fn group(n: usize) -> String {
    tp06_artifact::group_digits(n, ',')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(content: &str) -> Article {
        Article { title: "t".into(), content: content.into() }
    }

    #[test]
    fn length_stats_by_hand() {
        let s = LengthStats::of(&[a("ab"), a("abcd éé"), a("a b c")]);
        // chars: 2, 7, 5 → sorted 2, 5, 7
        assert_eq!((s.count, s.chars_total, s.chars_min, s.chars_max), (3, 14, 2, 7));
        assert_eq!(s.chars_median, 5.0);
        assert!((s.chars_mean - 14.0 / 3.0).abs() < 1e-12);
        assert!((s.words_mean - 6.0 / 3.0).abs() < 1e-12);
        assert_eq!(LengthStats::of(&[a("ab"), a("abcd")]).chars_median, 3.0);
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(923), "923");
        assert_eq!(group(3960), "3,960");
        assert_eq!(group(1234567), "1,234,567");
    }
}
