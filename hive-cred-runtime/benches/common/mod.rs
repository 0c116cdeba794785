//! Test data shared by the redaction benchmarks: deterministic pseudo-random tokens and
//! redactors over them, so runs compare.

use hive_cred_runtime::Redactor;

/// Deterministic pseudo-random numbers (xorshift).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `len` characters drawn from `alphabet`.
    pub fn token(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len)
            .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize] as char)
            .collect()
    }
}

/// `n` API-key-like values `sk_{i}_{token}`, the token `min + i % spread` characters of
/// `alphabet`.
pub fn secrets(n: usize, alphabet: &[u8], min: usize, spread: usize) -> Vec<String> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|i| format!("sk_{}_{}", i, rng.token(alphabet, min + (i % spread))))
        .collect()
}

/// A redactor over `secrets` (`cred{i}.api_key`), with or without the pattern layer.
pub fn redactor(secrets: &[String], patterns: bool) -> Redactor {
    let mut b = Redactor::builder().detect_patterns(patterns);
    for (i, s) in secrets.iter().enumerate() {
        b = b.secret(&format!("cred{i}"), "api_key", s.clone().into());
    }
    b.build().expect("automaton builds")
}
