//! Sequences decoded together (`Sequence`, `decode_step`), joining and
//! leaving mid-way, each give the ids they give alone through `generate`:
//! greedy, greedy with a repetition penalty, and seeded sampling, with
//! prompts of different lengths, different lengths asked, and `</s>`.

use tp06_model::backend::Cpu;
use tp06_model::{Gpt2, Precision};
use tp06_sample::{Flow, Length, Processing, Sequence, decode_step, generate, sample_seed};

fn model() -> Gpt2<Cpu> {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/demo/base");
    let config = tp06_model::HfConfig::from_file(&base.join("config.json")).unwrap().resolve().unwrap();
    tp06_model::init_from_scratch::<Cpu>(&config, tp06_model::ScratchInit { seed: 3 }, &Default::default())
}

/// A request: prompt, processors, new tokens, seed, and the step it joins at.
struct Request {
    prompt: Vec<u32>,
    processing: Processing,
    new: usize,
    seed: u64,
    joins: usize,
}

fn requests(eos: u32) -> Vec<Request> {
    let course = Processing { do_sample: true, temperature: 0.7, top_k: 50, top_p: 0.9, repetition_penalty: 1.2 };
    let hot = Processing { do_sample: true, temperature: 1.5, top_k: 0, top_p: 1.0, repetition_penalty: 1.0 };
    let penalty = Processing { repetition_penalty: 1.3, ..Processing::GREEDY };
    let prompt = |len: u32, from: u32| (from..from + len).map(|i| (i * 7) % 900 + 5).collect::<Vec<u32>>();
    vec![
        Request { prompt: prompt(6, 1), processing: Processing::GREEDY, new: 12, seed: 0, joins: 0 },
        Request { prompt: prompt(2, 40), processing: course, new: 9, seed: 42, joins: 0 },
        Request { prompt: prompt(11, 90), processing: hot, new: 15, seed: 7, joins: 3 },
        Request { prompt: prompt(1, 200), processing: penalty, new: 4, seed: 0, joins: 5 },
        // Its prompt ends where `</s>` is likely; short or not, it must match.
        Request { prompt: vec![eos, 17, 23], processing: course, new: 20, seed: 9, joins: 6 },
    ]
}

#[test]
fn sequences_decoded_together_give_the_ids_they_give_alone() {
    let eos = 2;
    for precision in [Precision::F32, Precision::Int8] {
        let model = model().with_precision(precision);
        let requests = requests(eos);
        let mut running: Vec<(usize, Sequence<Cpu>)> = Vec::new();
        let mut done: Vec<Option<Vec<u32>>> = requests.iter().map(|_| None).collect();
        let mut widest = 0;
        for step in 0..200 {
            for (i, r) in requests.iter().enumerate().filter(|(_, r)| r.joins == step) {
                let seed = sample_seed(r.seed, 0);
                let mut s = Sequence::start(&model, &r.prompt, r.processing, Length::New(r.new), Some(eos), seed);
                if !s.is_done() {
                    s.choose(&mut |_| Flow::Continue);
                }
                running.push((i, s));
            }
            if step > 0 {
                let mut seqs: Vec<&mut Sequence<Cpu>> = running.iter_mut().map(|(_, s)| s).collect();
                widest = widest.max(decode_step(&model, &mut seqs));
                for (_, s) in running.iter_mut().filter(|(_, s)| !s.is_done()) {
                    s.choose(&mut |_| Flow::Continue);
                }
            }
            for (i, s) in running.iter().filter(|(_, s)| s.is_done()) {
                done[*i] = Some(s.ids().to_vec());
            }
            running.retain(|(_, s)| !s.is_done());
            if done.iter().all(Option::is_some) {
                break;
            }
        }
        assert!(widest >= 3, "{precision}: several sequences in one step ({widest})");
        for (i, r) in requests.iter().enumerate() {
            let alone = generate(&model, &r.prompt, &r.processing, Length::New(r.new), Some(eos), 1, r.seed);
            assert_eq!(done[i].as_ref(), Some(&alone[0].ids), "{precision}: request {i}");
        }
    }
}

/// A fork draws its own tokens from the same prefill; `EndRow` ends a
/// sequence after its token, and `Stop` keeps nothing.
#[test]
fn forks_and_flows() {
    let model = model();
    let course = Processing { do_sample: true, temperature: 1.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0 };
    let prompt = [10, 20, 30];
    let mut a = Sequence::start(&model, &prompt, course, Length::New(8), None, sample_seed(5, 0));
    let mut b = a.fork(sample_seed(5, 1));
    for _ in 0..8 {
        a.choose(&mut |_| Flow::Continue);
        b.choose(&mut |_| Flow::Continue);
        decode_step(&model, &mut [&mut a, &mut b]);
    }
    let alone = generate(&model, &prompt, &course, Length::New(8), None, 1, 5);
    assert!(a.is_done() && b.is_done());
    assert_eq!(a.ids(), &alone[0].ids[..], "sample 0");
    assert_ne!(a.ids(), b.ids(), "a fork draws its own tokens");
    let mut c = Sequence::start(&model, &prompt, Processing::GREEDY, Length::New(8), None, 0);
    assert_eq!(c.choose(&mut |_| Flow::Stop), Flow::Stop);
    assert_eq!((c.new_tokens(), c.is_done()), (0, false), "nothing kept on Stop");
    assert_eq!(c.choose(&mut |_| Flow::EndRow), Flow::EndRow);
    assert_eq!((c.new_tokens(), c.is_done()), (1, true), "the token kept, the sequence done");
}
