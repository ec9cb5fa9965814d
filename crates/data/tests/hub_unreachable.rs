//! A hub source with no hub: the error says so and shows the way out. In its own
//! test binary because it sets environment variables.

use tp06_artifact::hub::Hub;
use tp06_artifact::{RunDir, StageContext};
use tp06_data::{Config, FilterMode};

#[test]
fn hub_sources_fail_clearly_when_the_hub_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let names = dir.path().join("names.txt");
    std::fs::write(&names, "Pikachu\n").unwrap();
    // SAFETY: the only test of this binary; no other thread reads the environment.
    unsafe {
        std::env::set_var("HF_HOME", dir.path().join("hf"));
        std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
        std::env::remove_var("HF_HUB_OFFLINE");
    }
    let config = Config {
        articles: "hf:chris-lmd/pokepedia-fr".parse().unwrap(),
        names: tp06_artifact::Source::Local(names),
        split: "train".into(),
        filter: FilterMode::Exact,
        valid_fraction: 0.0,
        seed: 0,
    };
    let err = tp06_data::run(&StageContext::new(&RunDir::new(dir.path().join("run")), &Hub::from_env()), &config)
        .unwrap_err()
        .to_string();
    assert!(err.contains("data.articles") && err.contains("unreachable"), "{err}");
    assert!(err.contains("--set data.articles=PATH"), "{err}");

    // Offline mode without a cache says that instead.
    unsafe { std::env::set_var("HF_HUB_OFFLINE", "1") };
    let err = tp06_data::run(&StageContext::new(&RunDir::new(dir.path().join("run")), &Hub::from_env()), &config)
        .unwrap_err()
        .to_string();
    assert!(err.contains("HF_HUB_OFFLINE") && err.contains("--set data.articles=PATH"), "{err}");
}
