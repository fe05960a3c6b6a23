//! Keeps this provider's capacity on the chain true: declares the speed it
//! offers, runs each capacity challenge the chain sets it as soon as it
//! sees it, commits to the answer, and reveals it once its partner can no
//! longer copy it; likewise for the GPU it offers, whose challenges it
//! solves on that GPU and answers in one transaction. A thread of its own,
//! polling the node: a challenge is timed from its block to the answer's
//! block, so it does not wait behind tasks in the provider's event loop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use idlegrid_api::client::{ApiClient, GpuChallengeState};
use idlegrid_gpu::Gpu;
use idlegrid_ledger::TxKind;
use idlegrid_sandbox::Sandbox;
use idlegrid_types::capacity::answer_commitment;
use idlegrid_types::codec::Bounded;
use idlegrid_types::{ContentId, Keypair};

use crate::ledger::send;
use tracing::{debug, info, warn};

/// How often the node is asked for new challenges.
const POLL: Duration = Duration::from_millis(250);
/// How long a transaction sent is given to land before it is sent again.
const RESEND_AFTER: Duration = Duration::from_secs(10);
/// What was sent for an epoch's challenge.
const ANSWER: u8 = 0;
const REVEAL: u8 = 1;
const GPU_ANSWER: u8 = 2;
/// Wall-clock backstop for one challenge run.
const CHALLENGE_WALL_TIME_MAX: Duration = Duration::from_secs(600);

/// The answering thread; stops when dropped.
pub(crate) struct ChallengeAnswerer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ChallengeAnswerer {
    /// Starts answering for `key`, which offers `fuel_per_second` (and
    /// `gpu`, a GPU at its speed), if the chain sets capacity challenges at
    /// all.
    pub(crate) fn start(
        client: ApiClient,
        key: Keypair,
        sandbox: Arc<Sandbox>,
        fuel_per_second: u64,
        gpu: Option<(Arc<Gpu>, u64)>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("challenges".to_owned())
            .spawn(move || {
                let mut answerer = Answerer {
                    client,
                    key,
                    sandbox,
                    fuel_per_second,
                    gpu,
                    chain_challenges: false,
                    declared: false,
                    declared_at: None,
                    gpu_declared: false,
                    gpu_declared_at: None,
                    outputs: BTreeMap::new(),
                    nonces: BTreeMap::new(),
                    solving: BTreeMap::new(),
                    sent: BTreeMap::new(),
                };
                while !flag.load(Ordering::Relaxed) {
                    match answerer.step() {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(error) => debug!(%error, "capacity challenges: will try again"),
                    }
                    std::thread::sleep(POLL);
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ChallengeAnswerer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // A challenge mid-run finishes on its own; nothing waits for it.
        drop(self.thread.take());
    }
}

struct Answerer {
    client: ApiClient,
    key: Keypair,
    sandbox: Arc<Sandbox>,
    fuel_per_second: u64,
    /// The GPU offered and its speed.
    gpu: Option<(Arc<Gpu>, u64)>,
    /// The chain sets challenges (known once asked).
    chain_challenges: bool,
    /// The chain holds `fuel_per_second` as this provider's speed.
    declared: bool,
    declared_at: Option<Instant>,
    /// The chain holds the GPU's speed (or there is no GPU).
    gpu_declared: bool,
    gpu_declared_at: Option<Instant>,
    /// Outputs committed to, by epoch, until revealed.
    outputs: BTreeMap<u64, ContentId>,
    /// GPU challenges' solutions, by epoch, until answered.
    nonces: BTreeMap<u64, Vec<u64>>,
    /// GPU challenges being solved, by epoch: their solutions arrive here.
    solving: BTreeMap<u64, mpsc::Receiver<Solved>>,
    /// When an answer or a reveal was last sent, by (epoch, which).
    sent: BTreeMap<(u64, u8), Instant>,
}

impl Answerer {
    /// One look at the chain. `Ok(false)`: it sets no challenges, so there
    /// is nothing to do, ever (its parameters are fixed at genesis).
    fn step(&mut self) -> Result<bool, String> {
        // Two questions asked until answered, then never again: whether
        // the chain challenges at all, and whether it holds this
        // provider's declared speed. After that, one request a poll.
        if !self.chain_challenges {
            let status = self.client.status().map_err(|error| error.to_string())?;
            if status["challenges"]["share_bps"].as_u64().unwrap_or(0) == 0 {
                info!("the chain sets no capacity challenges");
                return Ok(false);
            }
            self.chain_challenges = true;
        }
        let me = self.key.account_id();
        if !self.declared || !self.gpu_declared {
            let account = self
                .client
                .account(&me)
                .map_err(|error| error.to_string())?;
            let record = account.provider_record;
            self.declared = record.declared_fuel_per_second == self.fuel_per_second;
            let gpu_speed = self.gpu.as_ref().map(|(_, speed)| *speed);
            self.gpu_declared =
                gpu_speed.is_none_or(|speed| record.declared_gpu_fuel_per_second == speed);
            // Undeclared, it is not challenged: declare, and look again.
            if account.provider_stake > 0 {
                if !self.declared
                    && self
                        .declared_at
                        .is_none_or(|at| at.elapsed() >= RESEND_AFTER)
                {
                    self.send(TxKind::DeclareCapacity {
                        fuel_per_second: self.fuel_per_second,
                    })?;
                    self.declared_at = Some(Instant::now());
                    info!(
                        fuel_per_second = self.fuel_per_second,
                        "declared this provider's speed"
                    );
                }
                if let Some(speed) = gpu_speed
                    && !self.gpu_declared
                    && self
                        .gpu_declared_at
                        .is_none_or(|at| at.elapsed() >= RESEND_AFTER)
                {
                    self.send(TxKind::DeclareGpuCapacity {
                        fuel_per_second: speed,
                    })?;
                    self.gpu_declared_at = Some(Instant::now());
                    info!(
                        fuel_per_second = speed,
                        "declared this provider's GPU speed"
                    );
                }
            }
            if !self.declared || !self.gpu_declared {
                return Ok(true);
            }
        }
        let open = self
            .client
            .challenges(&me)
            .map_err(|error| error.to_string())?;
        for challenge in &open.gpu {
            if !challenge.answered {
                self.answer_gpu(challenge)?;
            }
        }
        let challenges = open.cpu;
        for challenge in &challenges {
            let epoch = challenge.epoch;
            if challenge.settled || challenge.revealed {
                continue;
            }
            if !challenge.answered {
                let output = match self.outputs.get(&epoch) {
                    // Sent, and not landed yet: give it time.
                    Some(_) if self.recently_sent(&(epoch, ANSWER)) => continue,
                    Some(output) => *output,
                    None => {
                        let started = Instant::now();
                        let answer = self.sandbox.run_challenge(
                            challenge.seed,
                            challenge.passes,
                            CHALLENGE_WALL_TIME_MAX,
                        )?;
                        info!(
                            epoch,
                            seconds = started.elapsed().as_secs_f64(),
                            fuel = answer.fuel_used,
                            "ran a capacity challenge"
                        );
                        self.outputs.insert(epoch, answer.output);
                        answer.output
                    }
                };
                self.send(TxKind::AnswerChallenge {
                    epoch,
                    commitment: answer_commitment(&output, &me),
                })?;
                self.sent.insert((epoch, ANSWER), Instant::now());
            } else if challenge.may_reveal && !self.recently_sent(&(epoch, REVEAL)) {
                let output = match self.outputs.get(&epoch) {
                    Some(output) => *output,
                    // Committed before a restart: run it again (the same
                    // seed gives the same output).
                    None => {
                        let answer = self.sandbox.run_challenge(
                            challenge.seed,
                            challenge.passes,
                            CHALLENGE_WALL_TIME_MAX,
                        )?;
                        self.outputs.insert(epoch, answer.output);
                        answer.output
                    }
                };
                match self.send(TxKind::RevealChallenge { epoch, output }) {
                    Ok(()) => {
                        self.sent.insert((epoch, REVEAL), Instant::now());
                        info!(epoch, "revealed a capacity challenge");
                    }
                    Err(error) => warn!(epoch, %error, "reveal refused"),
                }
            }
        }
        let open: Vec<u64> = challenges
            .iter()
            .map(|challenge| challenge.epoch)
            .chain(open.gpu.iter().map(|challenge| challenge.epoch))
            .collect();
        self.outputs.retain(|epoch, _| open.contains(epoch));
        self.nonces.retain(|epoch, _| open.contains(epoch));
        self.solving.retain(|epoch, _| open.contains(epoch));
        self.sent.retain(|(epoch, _), _| open.contains(epoch));
        Ok(true)
    }

    /// Answers a GPU challenge: solves it on the GPU offered and sends the
    /// nonces, on a thread of its own so that the CPU's challenge of the
    /// same epoch runs meanwhile and neither answer waits for the other;
    /// sends them again from here if they have not landed after a while.
    fn answer_gpu(&mut self, challenge: &GpuChallengeState) -> Result<(), String> {
        let epoch = challenge.epoch;
        if self.recently_sent(&(epoch, GPU_ANSWER)) {
            return Ok(());
        }
        let Some((gpu, speed)) = &self.gpu else {
            return Ok(());
        };
        if !self.nonces.contains_key(&epoch) {
            match self.solving.get(&epoch).map(mpsc::Receiver::try_recv) {
                None => {
                    let solver = Solver {
                        gpu: Arc::clone(gpu),
                        speed: *speed,
                        client: self.client.clone(),
                        key: self.key.clone(),
                    };
                    let solved = solver
                        .start(epoch, challenge)
                        .map_err(|error| error.to_string())?;
                    self.solving.insert(epoch, solved);
                    return Ok(());
                }
                Some(Err(mpsc::TryRecvError::Empty)) => return Ok(()),
                // Solved, and sent from its thread: give it time to land.
                Some(Ok(Ok(nonces))) => {
                    self.solving.remove(&epoch);
                    self.nonces.insert(epoch, nonces);
                    self.sent.insert((epoch, GPU_ANSWER), Instant::now());
                    return Ok(());
                }
                // Failed (or its thread died): try again at the next look.
                Some(Ok(Err(error))) => {
                    self.solving.remove(&epoch);
                    return Err(format!("the GPU challenge failed: {error}"));
                }
                Some(Err(mpsc::TryRecvError::Disconnected)) => {
                    self.solving.remove(&epoch);
                    return Err("the GPU challenge's thread ended without an answer".to_owned());
                }
            }
        }
        let nonces = self.nonces.get(&epoch).cloned().unwrap_or_default();
        let nonces = Bounded::new(nonces).map_err(|error| error.to_string())?;
        self.send(TxKind::AnswerGpuChallenge { epoch, nonces })?;
        self.sent.insert((epoch, GPU_ANSWER), Instant::now());
        Ok(())
    }

    fn recently_sent(&self, what: &(u64, u8)) -> bool {
        self.sent
            .get(what)
            .is_some_and(|at| at.elapsed() < RESEND_AFTER)
    }

    fn send(&self, kind: TxKind) -> Result<(), String> {
        send(&self.client, &self.key, kind)
            .map(|_| ())
            .map_err(|error| error.to_string())
    }
}

/// Solves one GPU challenge on a thread of its own and sends the answer.
struct Solver {
    gpu: Arc<Gpu>,
    speed: u64,
    client: ApiClient,
    key: Keypair,
}

/// What a solver found, or why it found nothing.
type Solved = Result<Vec<u64>, idlegrid_gpu::GpuError>;

impl Solver {
    /// Starts solving `challenge`; its nonces (sent once already, or not)
    /// arrive on the returned channel.
    fn start(
        self,
        epoch: u64,
        challenge: &GpuChallengeState,
    ) -> std::io::Result<mpsc::Receiver<Solved>> {
        let (done, solved) = mpsc::channel();
        let (seed, target) = (challenge.seed, challenge.target);
        std::thread::Builder::new()
            .name("gpu-challenge".to_owned())
            .spawn(move || {
                let started = Instant::now();
                let found = idlegrid_gpu::challenge::solve(
                    self.gpu.as_ref(),
                    &seed,
                    target,
                    self.speed,
                    CHALLENGE_WALL_TIME_MAX,
                );
                if let Ok(found) = &found {
                    info!(
                        epoch,
                        seconds = started.elapsed().as_secs_f64(),
                        fuel = found.fuel_used,
                        attempts = found.attempts,
                        "solved a GPU challenge"
                    );
                    let answer = Bounded::new(found.nonces.clone())
                        .map(|nonces| TxKind::AnswerGpuChallenge { epoch, nonces });
                    // Sent or not, the nonces go back: the loop sends them
                    // again if they do not land.
                    if let Ok(answer) = answer
                        && let Err(error) = send(&self.client, &self.key, answer)
                    {
                        debug!(epoch, %error, "the GPU answer was not taken yet");
                    }
                }
                let _ = done.send(found.map(|found| found.nonces));
            })?;
        Ok(solved)
    }
}
