//! The project's one integer mixer: splitmix64 (Steele, Lea & Flood 2014),
//! for the seeds derived from a run's seed (dropout masks, micro-batches,
//! samples). A pure function of its input: the same seeds on every machine.

/// The golden-ratio increment of splitmix64's state, `⌊2⁶⁴ / φ⌋` (odd).
pub const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// splitmix64's finaliser: a bijection of `u64` whose output bits each depend
/// on every input bit. (Inlined: the dropout masks call it once per element.)
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// splitmix64's output from state `x`: the state advanced by [`GAMMA`], mixed.
#[inline]
pub fn splitmix64(x: u64) -> u64 {
    mix64(x.wrapping_add(GAMMA))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From state 0: the generator's published first three outputs.
    #[test]
    fn splitmix64_gives_the_published_sequence() {
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(GAMMA), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(splitmix64(GAMMA.wrapping_mul(2)), 0x06c4_5d18_8009_454f);
        assert_eq!(mix64(0), 0, "the finaliser fixes 0");
    }
}
