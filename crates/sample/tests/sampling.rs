//! The sampler against transformers' logits processors
//! (`fixtures/make_sample_fixtures.py`), and generation's invariants.
//!
//! Tolerance: processed logits within 1e-5 relative; filtered sets identical.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::Value;
use tp06_artifact::{NoProgress, Watch};
use tp06_model::backend::Cpu;
use tp06_sample::processors::{self, Processing};
use tp06_sample::{Generator, Length, generate};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

fn fixture() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo("fixtures/sample/processors.json")).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().map_or(f32::NEG_INFINITY, |f| f as f32)).collect()
}

#[test]
fn processors_equal_transformers() {
    for (i, case) in fixture()["cases"].as_array().unwrap().iter().enumerate() {
        let processing = Processing {
            do_sample: true,
            temperature: case["temperature"].as_f64().unwrap(),
            top_k: case["top_k"].as_u64().unwrap() as usize,
            top_p: case["top_p"].as_f64().unwrap(),
            repetition_penalty: case["repetition_penalty"].as_f64().unwrap(),
        };
        let seen: Vec<u32> = case["seen"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let mut ours = floats(&case["logits"]);
        processing.apply(&mut ours, &seen);
        let theirs = floats(&case["processed"]);
        for (j, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            if b.is_finite() {
                assert!(a.is_finite() && (a - b).abs() <= 1e-5 * b.abs().max(1.0), "case {i} token {j}: {a} vs {b}");
            } else {
                assert_eq!(*a, f32::NEG_INFINITY, "case {i} token {j}: kept by us, filtered by transformers");
            }
        }
    }
}

#[test]
fn greedy_with_a_penalty_equals_transformers_generate() {
    let g = &fixture()["penalised_greedy"];
    let dir = repo("fixtures/model/tiny-safetensors");
    let config = tp06_model::HfConfig::from_file(&dir.join("config.json")).unwrap().resolve().unwrap();
    let (model, _) = tp06_model::load::<Cpu>(&dir.join("model.safetensors"), &config, &Default::default()).unwrap();
    let prompt: Vec<u32> = g["prompt"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let expected: Vec<u32> = g["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let processing = Processing { repetition_penalty: g["penalty"].as_f64().unwrap(), ..Processing::GREEDY };
    let out = generate(&model, &prompt, &processing, Length::New(expected.len() - prompt.len()), None, 1, 0);
    assert_eq!(out[0].ids, expected);
}

fn demo_generator() -> Generator<Cpu> {
    // The demo base tokenizer with a tiny model of matching vocabulary, from scratch.
    let base = repo("data/demo/base");
    let config = tp06_model::HfConfig::from_file(&base.join("config.json")).unwrap().resolve().unwrap();
    let model = tp06_model::init_from_scratch::<Cpu>(&config, tp06_model::ScratchInit { seed: 3 }, &Default::default());
    let tok = tp06_vocab::Tok::from_dir(&base).unwrap();
    let eos = tok.special_id(tok.specials.eos.as_ref());
    Generator { model, tok, eos, dir: base }
}

const COURSE: Processing =
    Processing { do_sample: true, temperature: 0.7, top_k: 50, top_p: 0.9, repetition_penalty: 1.2 };

#[test]
fn same_seed_same_text_and_samples_are_independent_of_their_number() {
    let g = demo_generator();
    let prompt = "Pikachu est un Pokémon de type";
    let a = g.complete(prompt, &COURSE, Length::Total(40), 3, 42).unwrap();
    let b = g.complete(prompt, &COURSE, Length::Total(40), 3, 42).unwrap();
    assert_eq!(a, b);
    let one = g.complete(prompt, &COURSE, Length::Total(40), 1, 42).unwrap();
    assert_eq!(one[0], a[0], "sample 0 does not depend on how many are drawn");
    assert_ne!(a[0].0, a[1].0, "different samples differ");
    let other = g.complete(prompt, &COURSE, Length::Total(40), 1, 43).unwrap();
    assert_ne!(other[0].0, a[0].0);
}

#[test]
fn max_length_counts_the_prompt_and_max_new_tokens_does_not() {
    let g = demo_generator();
    let prompt = "Pikachu est un Pokémon de type";
    let n = g.tok.encode(prompt).unwrap().len();
    for (text, generated) in g.complete(prompt, &Processing::GREEDY, Length::Total(n + 7), 1, 0).unwrap() {
        assert!(generated.stopped || generated.ids.len() == n + 7, "{}", generated.ids.len());
        assert!(text.starts_with(prompt));
    }
    let (_, generated) = &g.complete(prompt, &Processing::GREEDY, Length::New(5), 1, 0).unwrap()[0];
    assert!(generated.stopped || generated.new_tokens == 5);
    let (_, shorter) = &g.complete(prompt, &Processing::GREEDY, Length::Total(n - 1), 1, 0).unwrap()[0];
    assert_eq!(shorter.new_tokens, 0, "a max_length shorter than the prompt generates nothing");
}

#[test]
fn generation_stops_at_eos() {
    let g = demo_generator();
    let prompt = g.tok.encode("Pikachu est un Pokémon").unwrap();
    let free = generate(&g.model, &prompt, &Processing::GREEDY, Length::New(10), None, 1, 0).remove(0);
    // Declare the third generated token to be </s>: decoding must stop right there.
    let eos = free.ids[prompt.len() + 2];
    let first = free.ids[prompt.len()..].iter().position(|&t| t == eos).unwrap();
    let stopped = generate(&g.model, &prompt, &Processing::GREEDY, Length::New(10), Some(eos), 2, 0);
    for generated in stopped {
        assert!(generated.stopped);
        assert_eq!(generated.new_tokens, first + 1);
        assert_eq!(
            &generated.ids[..],
            &free.ids[..prompt.len() + first + 1],
            "same tokens up to and with </s>, nothing after"
        );
    }
}

#[test]
fn top_k_one_is_greedy() {
    let g = demo_generator();
    let prompt = "Le Pokémon";
    let greedy = g.complete(prompt, &Processing::GREEDY, Length::New(12), 1, 0).unwrap();
    let k1 = Processing { do_sample: true, temperature: 0.9, top_k: 1, top_p: 1.0, repetition_penalty: 1.0 };
    for seed in 0..3 {
        assert_eq!(g.complete(prompt, &k1, Length::New(12), 1, seed).unwrap()[0].0, greedy[0].0);
    }
}

#[test]
fn prompt_longer_than_the_context_is_refused() {
    let g = demo_generator();
    let long = "Pikachu ".repeat(400);
    let err = g.complete(&long, &COURSE, Length::New(5), 1, 0).unwrap_err().to_string();
    assert!(err.contains("context") && err.contains("shorten"), "{err}");
}

proptest! {
    #[test]
    fn top_p_never_drops_the_most_likely_token(
        logits in proptest::collection::vec(-20.0f32..20.0, 2..200),
        p in 0.001f64..0.999,
    ) {
        let top = processors::argmax(&logits);
        let mut l = logits.clone();
        processors::top_p(&mut l, p);
        prop_assert!(l[top].is_finite());
        // What is kept reaches p.
        let probs = processors::softmax(&logits);
        let kept: f64 = l.iter().zip(&probs).filter(|(v, _)| v.is_finite()).map(|(_, q)| q).sum();
        prop_assert!(kept >= p - 1e-9 || l.iter().filter(|v| v.is_finite()).count() == 1);
    }

    #[test]
    fn the_draw_never_picks_a_filtered_token(
        logits in proptest::collection::vec(-10.0f32..10.0, 2..100),
        k in 1usize..20,
        p in 0.05f64..1.0,
        u in 0.0f64..1.0,
    ) {
        let mut l = logits.clone();
        processors::top_k(&mut l, k);
        processors::top_p(&mut l, p);
        let picked = processors::draw(&l, u);
        prop_assert!(l[picked].is_finite());
    }
}

#[test]
fn smart_init_makes_the_name_read_as_the_reference_word() {
    let g = demo_generator();
    let references = vec!["animal".to_string(), "Pokémon".to_string(), "de".to_string()];
    let demo = tp06_sample::explore::smart_init(g.model, &g.tok, "Pikachu", &references, 7, Watch::none()).unwrap();
    // `animal` and `Pokémon` are split in the demo tokenizer: the first single-token word is used.
    assert_eq!(demo.reference.0, "de");
    assert_eq!(demo.after.pieces, ["Pikachu", "Ġest", "Ġun"]);
    assert!(demo.before.pieces.len() > demo.after.pieces.len());
    assert_eq!(demo.max_abs_diff, 0.0, "identical next-token distributions");
    assert_eq!(demo.after.top, demo.reference_prompt.top);
    assert_ne!(demo.before.top, demo.after.top);
    assert_eq!(demo.samples_after.len(), 3);
    let none = tp06_sample::explore::smart_init(
        demo_generator().model,
        &g.tok,
        "Pikachu",
        &["animal".to_string()],
        7,
        Watch::none(),
    )
    .unwrap_err();
    assert!(none.to_string().contains("--reference"), "{none}");
}

/// Asked to stop, the demo stops before its next generation and says so.
#[test]
fn smart_init_stops_between_generations_when_asked() {
    let g = demo_generator();
    let stop = std::sync::atomic::AtomicBool::new(true);
    let watch = Watch { progress: &NoProgress, stop: &stop };
    let err = tp06_sample::explore::smart_init(g.model, &g.tok, "Pikachu", &["de".to_string()], 7, watch).unwrap_err();
    assert!(matches!(err, tp06_sample::SampleError::Stopped { .. }), "{err}");
    assert!(err.to_string().contains("smart-initialisation demo stopped"), "{err}");
}

/// Generation looks at its stop flag before every token: set, it gives up
/// (`None`) before the first one; never set, it decodes what `generate` does.
/// (Stopping in the middle of a generation, through SIGTERM at the `token`
/// fault point, is tested on the real binary in `crates/cli/tests/reliability.rs`.)
#[test]
fn generation_gives_up_between_tokens_when_asked() {
    use std::sync::atomic::AtomicBool;
    let g = demo_generator();
    let prompt = g.tok.encode("Pikachu est un Pokémon").unwrap();
    let args = (&Processing::GREEDY, Length::New(6), None, 2, 0);
    let stop = AtomicBool::new(true);
    assert!(tp06_sample::generate_unless(&g.model, &prompt, args.0, args.1, args.2, args.3, args.4, &stop).is_none());
    let go = AtomicBool::new(false);
    let all = tp06_sample::generate_unless(&g.model, &prompt, args.0, args.1, args.2, args.3, args.4, &go).unwrap();
    assert_eq!(all, generate(&g.model, &prompt, args.0, args.1, args.2, args.3, args.4));
    assert!(g.complete_unless("Pikachu", args.0, args.1, 1, 0, &stop).unwrap().is_none());
}
