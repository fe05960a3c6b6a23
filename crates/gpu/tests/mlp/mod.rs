//! The quantized MLP example (`examples/mlp-gpu`) in Rust: its test data,
//! its weights and the same integer arithmetic, and the meter's count.

/// Input, hidden and output units.
pub const INPUTS: usize = 64;
pub const HIDDEN: usize = 32;
pub const OUTPUTS: usize = 10;

/// Deterministic test data (xorshift32).
pub struct Random(pub u32);

impl Random {
    pub fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }

    /// `count` int8 values over the whole range, -128 and 127 included.
    pub fn int8s(&mut self, count: usize) -> Vec<i8> {
        (0..count).map(|_| self.next() as u8 as i8).collect()
    }

    /// A value in `-limit ..= limit`.
    pub fn within(&mut self, limit: i32) -> i32 {
        (self.next() % (2 * limit as u32 + 1)) as i32 - limit
    }
}

pub fn int8_bytes(values: &[i8]) -> Vec<u8> {
    values.iter().map(|value| *value as u8).collect()
}

pub fn i32_bytes(values: &[i32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect()
}

pub fn i32s(bytes: &[u8]) -> Vec<i32> {
    bytes
        .chunks_exact(4)
        .map(|chunk| i32::from_le_bytes(chunk.try_into().expect("four bytes")))
        .collect()
}

/// The example network's weights and requantization.
pub struct Model {
    pub w1: Vec<i8>,
    pub b1: Vec<i32>,
    pub w2: Vec<i8>,
    pub b2: Vec<i32>,
    pub multiplier: u32,
    pub shift: u32,
}

impl Model {
    /// A network with the scales of a real one: a hidden sum of 64
    /// products of full-range int8 spreads over about ±45,000, and the
    /// hidden scale (multiplier / 2^shift ≈ 0.0015) maps it onto 0 … 127
    /// with some units saturating and about half cut by the ReLU.
    pub fn generate(random: &mut Random) -> Self {
        Self {
            w1: random.int8s(HIDDEN * INPUTS),
            b1: (0..HIDDEN).map(|_| random.within(20_000)).collect(),
            w2: random.int8s(OUTPUTS * HIDDEN),
            b2: (0..OUTPUTS).map(|_| random.within(50_000)).collect(),
            multiplier: 1_649_267_442,
            shift: 40,
        }
    }

    /// The `model` buffer: w1, b1, w2, b2.
    pub fn bytes(&self) -> Vec<u8> {
        let mut bytes = int8_bytes(&self.w1);
        bytes.extend(i32_bytes(&self.b1));
        bytes.extend(int8_bytes(&self.w2));
        bytes.extend(i32_bytes(&self.b2));
        bytes
    }

    /// The `params` words: batch, multiplier, shift.
    pub fn params(&self, batch: usize) -> [u32; 3] {
        [batch as u32, self.multiplier, self.shift]
    }

    /// The hidden activations (0 … 127 as bytes) and the results rows (10
    /// logits and the class) of `inputs`, in 64-bit arithmetic.
    pub fn infer(&self, inputs: &[i8]) -> (Vec<u8>, Vec<i32>) {
        let mut hidden = Vec::new();
        let mut results = Vec::new();
        for input in inputs.chunks_exact(INPUTS) {
            let start = hidden.len();
            for unit in 0..HIDDEN {
                let weights = &self.w1[unit * INPUTS..][..INPUTS];
                let sum = self.b1[unit] + dot(input, weights);
                let scaled = (i64::from(sum) * i64::from(self.multiplier)
                    + (1i64 << (self.shift - 1)))
                    >> self.shift;
                hidden.push(scaled.clamp(0, 127) as u8);
            }
            let activations: Vec<i8> = hidden[start..].iter().map(|h| *h as i8).collect();
            let logits: Vec<i32> = (0..OUTPUTS)
                .map(|output| {
                    self.b2[output] + dot(&activations, &self.w2[output * HIDDEN..][..HIDDEN])
                })
                .collect();
            let best = (0..OUTPUTS).fold(0, |best, output| {
                if logits[output] > logits[best] {
                    output
                } else {
                    best
                }
            });
            results.extend(logits);
            results.push(best as i32);
        }
        (hidden, results)
    }
}

fn dot(x: &[i8], y: &[i8]) -> i32 {
    x.iter()
        .zip(y)
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum()
}

/// Workgroups of the two dispatches: `layer1` over ceil(batch / 8),
/// `layer2` over ceil(batch / 64).
pub fn workgroups(batch: usize) -> [[u32; 3]; 2] {
    let batch = batch as u32;
    [[batch.div_ceil(8), 1, 1], [batch.div_ceil(64), 1, 1]]
}

/// The meter's rule for the two dispatches: layer1's invocations (64 per
/// 8 rows) each count one plus 9 entries of the loop copying w1, and each
/// of the batch's 8 per row 17 entries of its loop over 16 input words;
/// layer2's (64 per 64 rows) count one, and each of the batch's one per
/// row 11 entries of its loop over outputs and 9 per output of its loop
/// over 8 hidden words.
pub fn fuel(batch: u64) -> u64 {
    let layer1 = 64 * batch.div_ceil(8) * (1 + 9) + batch * 8 * 17;
    let layer2 = 64 * batch.div_ceil(64) + batch * (11 + 10 * 9);
    layer1 + layer2
}
