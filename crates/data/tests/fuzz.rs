//! Property tests of the hand-written readers (jsonl, txt) and the csv path:
//! arbitrary bytes give articles/names or an error naming the file — never a panic.

use proptest::prelude::*;
use tp06_data::{read_articles, read_names};

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        // Mostly-valid JSON lines with damage.
        ("[a-zA-Zé\"{}:, \\n\\\\]{0,120}").prop_map(|s| s.into_bytes()),
        (any::<String>(), any::<String>()).prop_map(|(t, c)| format!(
            "{}\n",
            serde_json::json!({"title": t, "content": c})
        )
        .into_bytes()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn readers_never_panic(content in bytes(), ext in prop_oneof![Just("jsonl"), Just("txt"), Just("csv")]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("input.{ext}"));
        std::fs::write(&path, &content).unwrap();
        let files = vec![path.clone()];
        if let Err(e) = read_articles(&files) {
            prop_assert!(e.to_string().contains("input."), "{e}");
        }
        if let Err(e) = read_names(&files) {
            prop_assert!(e.to_string().contains("input."), "{e}");
        }
    }

    #[test]
    fn valid_json_lines_read_back_exactly(rows in proptest::collection::vec(("[^\\u{0}]{1,20}", any::<String>()), 1..5)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let text: String = rows.iter().map(|(t, c)| format!("{}\n", serde_json::json!({"title": t, "content": c}))).collect();
        std::fs::write(&path, text).unwrap();
        let articles = read_articles(&[path]).unwrap();
        prop_assert_eq!(articles.len(), rows.len());
        for (a, (t, c)) in articles.iter().zip(&rows) {
            prop_assert_eq!(&a.title, t);
            prop_assert_eq!(&a.content, c);
        }
    }
}
