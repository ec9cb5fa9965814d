//! "Why this token": the candidates of one position with their probability
//! after each processor of transformers' chain, in its order — the raw
//! softmax, the repetition penalty, then (only when sampling, as in
//! `generate`) temperature, top-k and top-p — and where each was cut. The
//! notebook's §6.2 demo, on the model's own logits, computed with the very
//! processors the decoder applies.

use serde::Serialize;
use tp06_sample::Processing;
use tp06_sample::processors::{repetition_penalty, softmax, temperature, top_k, top_p};

/// The stages, in order.
pub const STAGES: [&str; 5] = ["softmax", "repetition_penalty", "temperature", "top_k", "top_p"];

/// One candidate token.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// Its id.
    pub id: u32,
    /// Its text.
    pub text: String,
    /// Its probability after each stage of [`STAGES`].
    pub probs: [f64; 5],
    /// The stage that removed it (`top_k`, `top_p`), if one did.
    pub cut_by: Option<&'static str>,
}

/// The chain at one position.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chain {
    /// Which stages ran: the warpers only when sampling.
    pub applied: [bool; 5],
    /// The most likely tokens before any processor, and the chosen one.
    pub candidates: Vec<Candidate>,
    /// The token chosen.
    pub chosen: u32,
}

/// The chain of `logits` (raw) after `seen`, for the `k` most likely tokens
/// and `chosen`; `text` names a token.
pub fn chain(
    logits: &[f32],
    seen: &[u32],
    processing: &Processing,
    k: usize,
    chosen: u32,
    text: impl Fn(u32) -> String,
) -> Chain {
    let sampling = processing.samples();
    let mut stages: Vec<Vec<f64>> = vec![softmax(logits)];
    let mut scores = logits.to_vec();
    repetition_penalty(&mut scores, seen, processing.repetition_penalty as f32);
    stages.push(softmax(&scores));
    if sampling {
        temperature(&mut scores, processing.temperature as f32);
        stages.push(softmax(&scores));
        top_k(&mut scores, processing.top_k);
        stages.push(softmax(&scores));
        top_p(&mut scores, processing.top_p);
        stages.push(softmax(&scores));
    } else {
        // Greedy decoding applies no warper: the distribution stays as it is.
        stages.extend([stages[1].clone(), stages[1].clone(), stages[1].clone()]);
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    let take = k.min(order.len());
    if take > 0 {
        order.select_nth_unstable_by(take - 1, |&a, &b| stages[0][b].total_cmp(&stages[0][a]).then(a.cmp(&b)));
    }
    let mut ids: Vec<usize> = order[..take].to_vec();
    ids.sort_by(|&a, &b| stages[0][b].total_cmp(&stages[0][a]).then(a.cmp(&b)));
    if !ids.contains(&(chosen as usize)) && (chosen as usize) < logits.len() {
        ids.push(chosen as usize);
    }
    let candidates = ids
        .into_iter()
        .map(|id| {
            let probs = [0, 1, 2, 3, 4].map(|s| stages[s][id]);
            // A token cut by top-k or top-p has no probability left from that stage on.
            let cut_by = (3..5).find(|&s| probs[s] == 0.0 && probs[s - 1] > 0.0).map(|s| STAGES[s]);
            Candidate { id: id as u32, text: text(id as u32), probs, cut_by }
        })
        .collect();
    Chain { applied: [true, true, sampling, sampling, sampling], candidates, chosen }
}

/// The `k` most likely tokens' log-probabilities under the raw logits, and the chosen one's.
pub fn logprobs(logits: &[f32], k: usize, chosen: u32) -> (f64, Vec<(u32, f64)>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let log_sum = logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln() + max;
    let lp = |id: usize| logits[id] as f64 - log_sum;
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    let top = order.into_iter().take(k).map(|id| (id as u32, lp(id))).collect();
    (lp(chosen as usize), top)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The notebook's §6.2 logits, worked by hand.
    #[test]
    fn each_stage_is_the_processor_s_distribution_and_cuts_are_named() {
        let logits = [2.0f32, 1.0, 0.5, -1.0];
        let processing =
            Processing { do_sample: true, temperature: 0.5, top_k: 3, top_p: 0.9, repetition_penalty: 2.0 };
        let c = chain(&logits, &[0], &processing, 4, 0, |id| format!("t{id}"));
        let z = |ls: &[f64]| -> Vec<f64> {
            let s: f64 = ls.iter().map(|l| l.exp()).sum();
            ls.iter().map(|l| l.exp() / s).collect()
        };
        let raw = z(&[2.0, 1.0, 0.5, -1.0]);
        let penalised = z(&[1.0, 1.0, 0.5, -1.0]); // token 0 seen: 2.0 / 2
        let tempered = z(&[2.0, 2.0, 1.0, -2.0]);
        let top3 = z(&[2.0, 2.0, 1.0]);
        // top-p 0.9 over top3 (0.422, 0.422, 0.155): the first two reach 0.845 < 0.9, so all three stay.
        let by_id = |id: u32| c.candidates.iter().find(|x| x.id == id).unwrap().clone();
        for id in 0..4u32 {
            let cand = by_id(id);
            let i = id as usize;
            let expect = [
                raw[i],
                penalised[i],
                tempered[i],
                if i < 3 { top3[i] } else { 0.0 },
                if i < 3 { top3[i] } else { 0.0 },
            ];
            for (got, want) in cand.probs.iter().zip(expect) {
                assert!((got - want).abs() < 1e-6, "token {id}: {:?} vs {expect:?}", cand.probs);
            }
        }
        assert_eq!(by_id(3).cut_by, Some("top_k"));
        assert_eq!(by_id(0).cut_by, None);
        assert_eq!(c.applied, [true; 5]);
        assert_eq!(c.candidates.iter().map(|x| x.id).collect::<Vec<_>>(), [0, 1, 2, 3], "by raw probability");

        // Greedy: no warper runs, and a chosen token outside the k is added.
        let greedy = Processing::GREEDY;
        let c = chain(&logits, &[], &greedy, 1, 2, |id| format!("t{id}"));
        assert_eq!(c.applied, [true, true, false, false, false]);
        assert_eq!(c.candidates.iter().map(|x| x.id).collect::<Vec<_>>(), [0, 2]);
        assert!(c.candidates.iter().all(|x| x.probs[4] == x.probs[0] && x.cut_by.is_none()));
    }

    #[test]
    fn logprobs_are_the_log_softmax() {
        let (lp, top) = logprobs(&[0.0, (3.0f32).ln()], 1, 0);
        assert!((lp - 0.25f64.ln()).abs() < 1e-6, "{lp}");
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].0, 1);
        assert!((top[0].1 - 0.75f64.ln()).abs() < 1e-6);
    }
}
