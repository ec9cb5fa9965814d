//! One decoding step over rows at different positions (`Gpt2::decode_rows`):
//! each row's logits, step after step, are bit for bit those of decoding it
//! alone with `forward_cached`, in every precision, with rows of different
//! prompt lengths joining and leaving mid-way.

use burn::prelude::*;
use tp06_model::backend::Cpu;
mod common;

use tp06_model::{Gpt2, Gpt2Config, Kernels, KvCache, Pass, Precision, ScratchInit};

/// A model of width 64 (every matrix can be int8), in memory.
fn config() -> Gpt2Config {
    common::tiny_config(96, 48, 64)
}

/// A request: its prompt, the step at which it joins, the tokens it decodes.
struct Request {
    prompt: Vec<u32>,
    joins: usize,
    tokens: usize,
}

fn requests() -> Vec<Request> {
    let prompt = |len: usize, seed: u32| (0..len as u32).map(|i| (i * 37 + seed * 11) % 96).collect();
    vec![
        Request { prompt: prompt(3, 1), joins: 0, tokens: 10 },
        Request { prompt: prompt(1, 2), joins: 0, tokens: 3 },
        Request { prompt: prompt(7, 3), joins: 2, tokens: 5 },
        Request { prompt: prompt(12, 4), joins: 4, tokens: 6 },
        // Enough rows for a step past one register tile of 8 rows.
        Request { prompt: prompt(2, 5), joins: 1, tokens: 7 },
        Request { prompt: prompt(5, 6), joins: 1, tokens: 4 },
        Request { prompt: prompt(4, 7), joins: 2, tokens: 6 },
        Request { prompt: prompt(9, 8), joins: 2, tokens: 5 },
        Request { prompt: prompt(6, 9), joins: 3, tokens: 4 },
        Request { prompt: prompt(8, 10), joins: 3, tokens: 5 },
    ]
}

fn to_vec(t: Tensor<Cpu, 2>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

fn argmax(v: &[f32]) -> u32 {
    (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b]).then(b.cmp(&a))).unwrap() as u32
}

/// The prompt's last logits and the cache after it, the prompt run alone.
fn prefill(model: &Gpt2<Cpu>, prompt: &[u32]) -> (Vec<f32>, KvCache<Cpu>) {
    let device = Default::default();
    let mut cache = KvCache::new(model.h.len());
    let ids = prompt.iter().map(|&i| i64::from(i)).collect::<Vec<_>>();
    let ids = Tensor::<Cpu, 2, Int>::from_data(TensorData::new(ids, [1, prompt.len()]), &device);
    let logits = model.forward_cached(ids, &mut cache, &mut Pass::inference());
    let vocab = logits.dims()[2];
    let last = logits.slice(s![.., prompt.len() - 1..prompt.len(), ..]).reshape([1, vocab]);
    (to_vec(last), cache)
}

/// Each step's logits of greedy decoding `request` alone, one row.
fn alone(model: &Gpt2<Cpu>, request: &Request) -> Vec<Vec<f32>> {
    let device = Default::default();
    let (mut last, mut cache) = prefill(model, &request.prompt);
    let mut steps = Vec::new();
    for _ in 0..request.tokens {
        let ids = Tensor::<Cpu, 2, Int>::from_data(TensorData::new(vec![i64::from(argmax(&last))], [1, 1]), &device);
        let logits = model.forward_cached(ids, &mut cache, &mut Pass::inference());
        last = to_vec(logits.reshape([1, model.vocab_size()]));
        steps.push(last.clone());
    }
    steps
}

/// Each request's steps' logits when they are decoded together: a request
/// is prefilled alone at the step it joins, then decoded with the others
/// in one `decode_rows` step each, and leaves after its last token.
fn together(model: &Gpt2<Cpu>, requests: &[Request]) -> Vec<Vec<Vec<f32>>> {
    struct Running {
        index: usize,
        last: Vec<f32>,
        cache: KvCache<Cpu>,
    }
    let mut out: Vec<Vec<Vec<f32>>> = requests.iter().map(|_| Vec::new()).collect();
    let mut running: Vec<Running> = Vec::new();
    let mut widest = 0;
    for step in 0.. {
        for (index, request) in requests.iter().enumerate().filter(|(_, r)| r.joins == step) {
            let (last, cache) = prefill(model, &request.prompt);
            running.push(Running { index, last, cache });
        }
        running.retain(|r| out[r.index].len() < requests[r.index].tokens);
        if running.is_empty() && requests.iter().all(|r| r.joins <= step) {
            break;
        }
        widest = widest.max(running.len());
        let ids: Vec<u32> = running.iter().map(|r| argmax(&r.last)).collect();
        let mut caches: Vec<&mut KvCache<Cpu>> = running.iter_mut().map(|r| &mut r.cache).collect();
        let logits = to_vec(model.decode_rows(&ids, &mut caches, &mut Pass::inference()));
        for (r, row) in running.iter_mut().zip(logits.chunks_exact(model.vocab_size())) {
            r.last = row.to_vec();
            out[r.index].push(r.last.clone());
        }
    }
    assert!(widest >= 3, "the scenario decodes several rows at once ({widest})");
    out
}

#[test]
fn rows_decoded_together_give_each_row_s_logits_alone_bit_for_bit() {
    let device = Default::default();
    let f32_model = tp06_model::init_from_scratch::<Cpu>(&config(), ScratchInit { seed: 5 }, &device);
    let requests = requests();
    eprintln!(
        "kernel paths on this CPU: q8 {}, bf16 {}",
        tp06_model::kernels::q8::Path::detect().name(),
        tp06_model::kernels::bf16::Path::detect().name()
    );
    let layouts = [
        (Precision::F32, false),
        (Precision::F32, true), // the `Conv1D` weights laid out `[out, in]`, as generation loads them
        (Precision::Bf16, false),
        (Precision::Int8, false),
    ];
    for (precision, for_decoding) in layouts {
        let model = f32_model.clone().with_precision(precision);
        let model = if for_decoding { model.for_decoding() } else { model };
        let precision = format!("{precision}{}", if for_decoding { " for decoding" } else { "" });
        assert!(requests.len() <= model.rows_per_step(), "{precision}: every row in one step");
        let together = together(&model, &requests);
        for (i, request) in requests.iter().enumerate() {
            let alone = alone(&model, request);
            assert_eq!(together[i].len(), request.tokens, "{precision}: request {i}'s steps");
            for (step, (a, b)) in alone.iter().zip(&together[i]).enumerate() {
                let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{precision}: request {i}, step {step}: the logits differ from decoding it alone");
            }
        }
    }
}

/// The cache grows by one position per step for each row, and a row's
/// position is its own (a row at position 12 beside one at position 1).
#[test]
fn each_row_keeps_its_own_position() {
    let device = Default::default();
    let model = tp06_model::init_from_scratch::<Cpu>(&config(), ScratchInit { seed: 6 }, &device);
    let (_, mut a) = prefill(&model, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    let (_, mut b) = prefill(&model, &[7]);
    let mut caches = vec![&mut a, &mut b];
    let logits = model.decode_rows(&[5, 5], &mut caches, &mut Pass::inference());
    assert_eq!(logits.dims(), [2, 96]);
    assert_eq!((a.len(), b.len()), (13, 2));
    let rows = to_vec(logits);
    assert_ne!(rows[..96], rows[96..], "the same token at two positions, with two histories");
}

/// The cache grows in place and is copied to a larger buffer every 64
/// positions: decoding 150 positions (a prompt of 3, then one at a time,
/// past two growths), alone and as two rows of a step, gives the full
/// forward pass's logits at every position.
#[test]
fn a_cache_past_its_growths_gives_the_full_forward_pass() {
    let device = Default::default();
    let config = common::tiny_config(96, 160, 64);
    let model = tp06_model::init_from_scratch::<Cpu>(&config, ScratchInit { seed: 9 }, &device);
    let tokens: Vec<u32> = (0..150u32).map(|i| (i * 53 + 7) % 96).collect();
    let ids = tokens.iter().map(|&i| i64::from(i)).collect::<Vec<_>>();
    let full = model.forward(Tensor::from_data(TensorData::new(ids, [1, 150]), &device), &mut Pass::inference());
    let full = to_vec(full.reshape([150, model.vocab_size()]));
    let vocab = model.vocab_size();
    let close = |a: &[f32], b: &[f32], what: &str| {
        let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-4, "{what}: max |Δlogit| {diff}");
    };
    // The decoding step's attention on the backend's kernel and on the composed ops.
    for kernels in [Kernels::Backend, Kernels::Composed] {
        let (last, mut cache) = prefill(&model, &tokens[..3]);
        let mut twin = cache.clone(); // shares the buffers until one of them writes
        close(&last, &full[2 * vocab..3 * vocab], "the prompt's last position");
        for (pos, &token) in tokens.iter().enumerate().skip(3) {
            let mut pass = Pass::inference().with_kernels(kernels);
            let logits = to_vec(model.decode_rows(&[token, token], &mut [&mut cache, &mut twin], &mut pass));
            let want = &full[pos * vocab..(pos + 1) * vocab];
            close(&logits[..vocab], want, &format!("{kernels:?}: position {pos}, first row"));
            assert_eq!(logits[..vocab], logits[vocab..], "{kernels:?}: position {pos}: two rows with the same past");
        }
        assert_eq!((cache.len(), twin.len()), (150, 150));
    }
}
