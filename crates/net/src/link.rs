//! Work links: requests and their responses on one long-lived stream per
//! peer and direction.
//!
//! A node that sends a peer requests opens one stream to it and keeps it
//! while it has something to say: each request goes out as a frame with its
//! own id, and the peer answers with frames carrying the same ids, in
//! whatever order it answers. A new stream per request (libp2p's
//! request-response) pays for opening the stream and negotiating its
//! protocol on every message; on a kept stream a message is one write each
//! way. Nor is the swarm's task on this path: a link's tasks read and write
//! their stream themselves, and a request reaches the node straight from
//! the task that read it.
//!
//! Everything a peer can make a link hold is bounded: requests in flight
//! on each link (the reader stops reading past the bound, and the
//! multiplexer's window then holds the peer back), links per peer, links
//! in all, and the size of each frame (see [`crate::protocol`]). A peer
//! whose frame does not decode is reported to the swarm, which blocks it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use idlegrid_types::AccountId;
use libp2p::{PeerId, Stream};
use libp2p_stream::{Control, IncomingStreams, OpenStreamError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tracing::debug;

use crate::identity::{account_of, peer_id_of};
use crate::overlay::{Event, Reply, RequestError};
use crate::protocol::{
    Request, Response, WORK_PROTOCOL, Wire, encode_frame, read_frame, send_frame,
};

/// The bounds and times of work links.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkConfig {
    /// How long a request waits for its response (and a stream to open).
    pub request_timeout: Duration,
    /// Requests in flight on one link, each way.
    pub in_flight_max: usize,
    /// A link with nothing in flight for this long closes its stream.
    pub idle_timeout: Duration,
    /// Links open at once, outbound and inbound each.
    pub links_max: usize,
}

/// Streams one peer may have open to this node at once. A peer needs one;
/// a few cover a reconnection whose old stream has not yet closed.
const INBOUND_LINKS_PER_PEER_MAX: usize = 4;

/// A request waiting for its turn on a link, and where its answer goes.
struct Outgoing {
    request: Request,
    reply: oneshot::Sender<Result<Response, RequestError>>,
}

/// A request sent and not yet answered, holding its place in flight.
struct Sent {
    reply: oneshot::Sender<Result<Response, RequestError>>,
    _permit: OwnedSemaphorePermit,
}

/// The requests a link has sent, until its reader stops: after that no
/// request is taken in, so none waits for an answer that cannot come.
struct InFlight {
    open: bool,
    sent: HashMap<u64, Sent>,
}

/// The links of one overlay node, shared by its handles and link tasks.
pub(crate) struct Links {
    control: Mutex<Control>,
    config: LinkConfig,
    /// Each peer's link, by its queue; a closed queue is a link that ended.
    outbound: Mutex<HashMap<PeerId, mpsc::Sender<Outgoing>>>,
    inbound: Mutex<HashMap<PeerId, usize>>,
    events: mpsc::Sender<Event>,
    /// What the swarm should know about peers: who sent something
    /// malformed (to block), who exchanged work (to protect).
    notes: mpsc::Sender<PeerNote>,
    /// Peers already reported as having exchanged work.
    worked: Mutex<HashSet<PeerId>>,
    stopped: watch::Receiver<()>,
}

/// What a link tells the swarm about its peer.
#[derive(Debug)]
pub(crate) enum PeerNote {
    Misbehaved(PeerId, String),
    /// The peer answered a request with something other than a refusal, or
    /// this node answered one of its requests so: it is doing work with
    /// this node, which keeps it past the bounds on connections.
    Worked(PeerId),
    /// A request could not reach the peer: no address worked, or none was
    /// known.
    Unreachable(PeerId),
}

/// Peers remembered as having exchanged work; beyond it no more are
/// reported (the connection bounds are that large anyway).
const WORKED_PEERS_MAX: usize = 4096;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Links {
    /// Starts taking the peers' work streams. The sender of `stopped` goes
    /// when the swarm stops; links then end.
    pub(crate) fn start(
        mut control: Control,
        config: LinkConfig,
        events: mpsc::Sender<Event>,
        notes: mpsc::Sender<PeerNote>,
        stopped: watch::Receiver<()>,
    ) -> Result<Arc<Links>, String> {
        let incoming = control
            .accept(WORK_PROTOCOL)
            .map_err(|error| format!("failed to take work streams: {error}"))?;
        let links = Arc::new(Links {
            control: Mutex::new(control),
            config,
            outbound: Mutex::new(HashMap::new()),
            inbound: Mutex::new(HashMap::new()),
            events,
            notes,
            worked: Mutex::new(HashSet::new()),
            stopped,
        });
        tokio::spawn(Arc::clone(&links).accept(incoming));
        Ok(links)
    }

    /// The swarm has stopped (its end of `stopped` is gone).
    fn is_stopped(&self) -> bool {
        self.stopped.has_changed().is_err()
    }

    /// Puts a request on the peer's link now when there is room (opening
    /// the link if there is none), and returns the wait for its answer.
    /// Requests to one peer go out in the order they are sent.
    pub(crate) fn send(
        self: &Arc<Self>,
        account: AccountId,
        request: Request,
    ) -> impl Future<Output = Result<Response, RequestError>> + Send + use<> {
        let (reply, answer) = oneshot::channel();
        let queued = self.enqueue(account, Outgoing { request, reply });
        let timeout = self.config.request_timeout;
        async move {
            if let Some((queue, outgoing)) = queued? {
                queue
                    .send(outgoing)
                    .await
                    .map_err(|_| RequestError::ConnectionClosed(account))?;
            }
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(RequestError::ConnectionClosed(account)),
                Err(_) => Err(RequestError::Timeout(account)),
            }
        }
    }

    /// Queues `outgoing` on the peer's link; when the link's queue is full,
    /// hands the request back with the queue to wait on.
    fn enqueue(
        self: &Arc<Self>,
        account: AccountId,
        outgoing: Outgoing,
    ) -> Result<Option<(mpsc::Sender<Outgoing>, Outgoing)>, RequestError> {
        if self.is_stopped() {
            return Err(RequestError::Stopped);
        }
        let peer = peer_id_of(&account);
        let mut outgoing = outgoing;
        // A link may end between taking its queue and queueing: one more
        // try opens a fresh one.
        for _ in 0..2 {
            let queue = self.outbound_queue(peer, account)?;
            match queue.try_send(outgoing) {
                Ok(()) => return Ok(None),
                Err(mpsc::error::TrySendError::Full(back)) => return Ok(Some((queue, back))),
                Err(mpsc::error::TrySendError::Closed(back)) => outgoing = back,
            }
        }
        Err(RequestError::ConnectionClosed(account))
    }

    /// The queue of the link to `peer`, opening the link if there is none.
    fn outbound_queue(
        self: &Arc<Self>,
        peer: PeerId,
        account: AccountId,
    ) -> Result<mpsc::Sender<Outgoing>, RequestError> {
        let mut outbound = lock(&self.outbound);
        if let Some(queue) = outbound.get(&peer)
            && !queue.is_closed()
        {
            return Ok(queue.clone());
        }
        outbound.retain(|_, queue| !queue.is_closed());
        if outbound.len() >= self.config.links_max {
            return Err(RequestError::Io {
                peer: account,
                message: format!(
                    "this node already has {} links open, its limit",
                    self.config.links_max
                ),
            });
        }
        let (queue, queued) = mpsc::channel(self.config.in_flight_max.max(1));
        outbound.insert(peer, queue.clone());
        let control = lock(&self.control).clone();
        tokio::spawn(Arc::clone(self).outbound(peer, account, control, queued));
        Ok(queue)
    }

    /// Runs the link to one peer until it fails, idles or the node stops,
    /// then answers whatever is still queued with why it ended.
    async fn outbound(
        self: Arc<Self>,
        peer: PeerId,
        account: AccountId,
        control: Control,
        mut queued: mpsc::Receiver<Outgoing>,
    ) {
        let ended = self.run_outbound(peer, account, control, &mut queued).await;
        // Closing the queue marks this link ended; a newer link's is open.
        queued.close();
        {
            let mut outbound = lock(&self.outbound);
            if outbound.get(&peer).is_some_and(mpsc::Sender::is_closed) {
                outbound.remove(&peer);
            }
        }
        match ended {
            // It idled out as a request arrived: a fresh link takes it.
            Ok(()) => {
                while let Ok(outgoing) = queued.try_recv() {
                    self.resend(account, outgoing);
                }
            }
            Err(error) => {
                while let Ok(outgoing) = queued.try_recv() {
                    let _ = outgoing.reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// Queues a request that an ended link never sent on a new link. A
    /// request that cannot be queued is dropped with its reply, which its
    /// sender hears as a closed connection.
    fn resend(self: &Arc<Self>, account: AccountId, outgoing: Outgoing) {
        if let Ok(Some((queue, outgoing))) = self.enqueue(account, outgoing) {
            tokio::spawn(async move {
                let _ = queue.send(outgoing).await;
            });
        }
    }

    /// Opens the stream, then writes queued requests as frames while a
    /// reader task hands each response to its request. Ends `Ok` when the
    /// link idles or every handle is gone.
    async fn run_outbound(
        self: &Arc<Self>,
        peer: PeerId,
        account: AccountId,
        mut control: Control,
        queued: &mut mpsc::Receiver<Outgoing>,
    ) -> Result<(), RequestError> {
        let timeout = self.config.request_timeout;
        let stream =
            match tokio::time::timeout(timeout, control.open_stream(peer, WORK_PROTOCOL)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(OpenStreamError::UnsupportedProtocol(_))) => {
                    return Err(RequestError::Unsupported(account));
                }
                Ok(Err(OpenStreamError::Io(error)))
                    if error.kind() == std::io::ErrorKind::NotConnected =>
                {
                    debug!(%account, %error, "could not reach a peer");
                    // The swarm asks the DHT where it is now (the dial
                    // may have failed before any address was tried).
                    let _ = self.notes.try_send(PeerNote::Unreachable(peer));
                    return Err(RequestError::Unreachable(account));
                }
                Ok(Err(error)) => {
                    return Err(RequestError::Io {
                        peer: account,
                        message: error.to_string(),
                    });
                }
                Err(_) => return Err(RequestError::Timeout(account)),
            };
        let (reader, mut writer) = stream.split();
        let in_flight = Arc::new(Mutex::new(InFlight {
            open: true,
            sent: HashMap::new(),
        }));
        let permits = Arc::new(Semaphore::new(self.config.in_flight_max.max(1)));
        let (failed, mut reader_ended) = oneshot::channel();
        tokio::spawn(Arc::clone(self).read_responses(
            peer,
            account,
            reader,
            Arc::clone(&in_flight),
            failed,
        ));
        let mut stopped = self.stopped.clone();
        let mut next_id = 0u64;
        loop {
            let outgoing = tokio::select! {
                biased;
                error = &mut reader_ended => {
                    return Err(error.unwrap_or(RequestError::ConnectionClosed(account)));
                }
                _ = stopped.changed() => return Err(RequestError::Stopped),
                next = tokio::time::timeout(self.config.idle_timeout, queued.recv()) => match next {
                    Ok(Some(outgoing)) => outgoing,
                    // Every handle is gone: the node is shutting down.
                    Ok(None) => break,
                    Err(_) if lock(&in_flight).sent.is_empty() => break,
                    Err(_) => continue,
                },
            };
            if outgoing.reply.is_closed() {
                // Its sender stopped waiting (timed out) before its turn.
                continue;
            }
            let permit = match Arc::clone(&permits).try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    // Requests whose senders gave up hold no place.
                    lock(&in_flight)
                        .sent
                        .retain(|_, sent| !sent.reply.is_closed());
                    tokio::select! {
                        biased;
                        error = &mut reader_ended => {
                            let error = error.unwrap_or(RequestError::ConnectionClosed(account));
                            let _ = outgoing.reply.send(Err(error.clone()));
                            return Err(error);
                        }
                        permit = Arc::clone(&permits).acquire_owned() => {
                            permit.expect("the semaphore is never closed")
                        }
                    }
                }
            };
            let id = next_id;
            next_id += 1;
            let frame = match encode_frame(id, &outgoing.request) {
                Ok(frame) => frame,
                Err(error) => {
                    let _ = outgoing.reply.send(Err(RequestError::Io {
                        peer: account,
                        message: error.to_string(),
                    }));
                    continue;
                }
            };
            {
                let mut in_flight = lock(&in_flight);
                if !in_flight.open {
                    let _ = outgoing
                        .reply
                        .send(Err(RequestError::ConnectionClosed(account)));
                    continue;
                }
                in_flight.sent.insert(
                    id,
                    Sent {
                        reply: outgoing.reply,
                        _permit: permit,
                    },
                );
            }
            if let Err(error) = send_frame(&mut writer, &frame).await {
                debug!(%account, %error, "a work stream failed while writing");
                let error = RequestError::Io {
                    peer: account,
                    message: error.to_string(),
                };
                fail_all(&in_flight, &error);
                return Err(error);
            }
        }
        let _ = writer.close().await;
        Ok(())
    }

    /// Reads response frames and answers each one's request, until the
    /// stream ends or sends something malformed; then fails the requests
    /// still in flight and tells the writer.
    async fn read_responses(
        self: Arc<Self>,
        peer: PeerId,
        account: AccountId,
        mut reader: futures::io::ReadHalf<Stream>,
        in_flight: Arc<Mutex<InFlight>>,
        ended: oneshot::Sender<RequestError>,
    ) {
        let error = loop {
            match read_frame::<Response, _>(&mut reader).await {
                Ok((id, Wire::Decoded(response))) => {
                    self.note_work(peer, &response);
                    // An id no request holds answers one whose sender gave up.
                    if let Some(sent) = lock(&in_flight).sent.remove(&id) {
                        let _ = sent.reply.send(Ok(response));
                    }
                }
                Ok((_, Wire::Malformed(reason))) => {
                    let error = RequestError::Io {
                        peer: account,
                        message: reason.clone(),
                    };
                    self.report(peer, format!("a malformed response: {reason}"));
                    break error;
                }
                Err(error) => {
                    debug!(%account, %error, "a work stream closed");
                    break RequestError::ConnectionClosed(account);
                }
            }
        };
        fail_all(&in_flight, &error);
        let _ = ended.send(error);
    }

    fn report(&self, peer: PeerId, reason: String) {
        // The swarm blocks the peer; should it be too busy to hear, the
        // link still closes.
        let _ = self.notes.try_send(PeerNote::Misbehaved(peer, reason));
    }

    /// Tells the swarm, once per peer, that `peer` exchanged work: a
    /// `response` other than a refusal went one way or the other.
    fn note_work(&self, peer: PeerId, response: &Response) {
        if matches!(response, Response::Refused { .. }) {
            return;
        }
        let mut worked = lock(&self.worked);
        if worked.len() < WORKED_PEERS_MAX
            && !worked.contains(&peer)
            && self.notes.try_send(PeerNote::Worked(peer)).is_ok()
        {
            worked.insert(peer);
        }
    }

    /// Takes each peer's work streams, within the bounds on links.
    async fn accept(self: Arc<Self>, mut incoming: IncomingStreams) {
        let mut stopped = self.stopped.clone();
        loop {
            let next = tokio::select! {
                _ = stopped.changed() => break,
                next = incoming.next() => next,
            };
            let Some((peer, stream)) = next else { break };
            // Not an ed25519 identity, so not an idlegrid node.
            let Some(account) = account_of(&peer) else {
                continue;
            };
            let Some(guard) = self.admit_inbound(peer) else {
                debug!(%account, "refusing a work stream past the limit on links");
                continue;
            };
            tokio::spawn(Arc::clone(&self).inbound(peer, account, stream, guard));
        }
    }

    fn admit_inbound(self: &Arc<Self>, peer: PeerId) -> Option<InboundGuard> {
        let mut inbound = lock(&self.inbound);
        let total: usize = inbound.values().sum();
        let count = inbound.entry(peer).or_default();
        if *count >= INBOUND_LINKS_PER_PEER_MAX || total >= self.config.links_max {
            if *count == 0 {
                inbound.remove(&peer);
            }
            return None;
        }
        *count += 1;
        Some(InboundGuard {
            links: Arc::clone(self),
            peer,
        })
    }

    /// Serves one peer's stream: each request it reads goes to the node as
    /// an [`Event::Request`] (or is answered `busy` when the node's queue
    /// is full), and each answer is written back with the request's id as
    /// soon as the node gives it.
    async fn inbound(
        self: Arc<Self>,
        peer: PeerId,
        account: AccountId,
        stream: Stream,
        _guard: InboundGuard,
    ) {
        let (mut reader, mut writer) = stream.split();
        let permits = Arc::new(Semaphore::new(self.config.in_flight_max.max(1)));
        // Bounded by the permits: one answer per request read.
        let (answers, mut answered) = mpsc::unbounded_channel::<Answer>();
        let links = Arc::clone(&self);
        let reading = async move {
            loop {
                let permit = Arc::clone(&permits)
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                let (id, request) = match read_frame::<Request, _>(&mut reader).await {
                    Ok(frame) => frame,
                    Err(_) => return,
                };
                let request = match request {
                    Wire::Decoded(request) => request,
                    Wire::Malformed(reason) => {
                        return links.report(peer, format!("a malformed request: {reason}"));
                    }
                };
                let (reply, answer) = oneshot::channel();
                let event = Event::Request {
                    peer: account,
                    request,
                    reply: Reply::new(reply),
                };
                let answer: Answer = match links.events.try_send(event) {
                    Ok(()) => async move {
                        let response = answer.await.unwrap_or_else(|_| {
                            Response::refused("dropped", "the node dropped the request")
                        });
                        (id, response, permit)
                    }
                    .boxed(),
                    Err(_) => {
                        let busy =
                            Response::refused("busy", "the node has too much to do; try again");
                        futures::future::ready((id, busy, permit)).boxed()
                    }
                };
                if answers.send(answer).is_err() {
                    return;
                }
            }
        };
        let noting = Arc::clone(&self);
        let writing = async move {
            let mut waiting = FuturesUnordered::new();
            let mut reading = true;
            loop {
                // The permit goes once the answer is written: a peer that
                // sends requests and never reads the answers holds at most
                // the bound of them here.
                let (id, response, _permit) = tokio::select! {
                    answer = answered.recv(), if reading => {
                        match answer {
                            Some(answer) => waiting.push(answer),
                            None => reading = false,
                        }
                        continue;
                    }
                    Some(done) = waiting.next(), if !waiting.is_empty() => done,
                    // The reader has stopped and every answer is written.
                    else => break,
                };
                let frame = match encode_frame(id, &response) {
                    Ok(frame) => frame,
                    Err(error) => {
                        debug!(%error, "an answer could not be encoded");
                        let refusal = Response::refused("unanswerable", error.to_string());
                        encode_frame(id, &refusal).expect("a refusal is small")
                    }
                };
                if send_frame(&mut writer, &frame).await.is_err() {
                    return;
                }
                noting.note_work(peer, &response);
            }
            let _ = writer.close().await;
        };
        let mut stopped = self.stopped.clone();
        tokio::select! {
            _ = stopped.changed() => {}
            _ = futures::future::join(reading, writing) => {}
        }
    }
}

/// An answer on its way: the request's id, the response to write, and the
/// request's place in flight.
type Answer = BoxFuture<'static, (u64, Response, OwnedSemaphorePermit)>;

/// Fails every request in flight and takes no more.
fn fail_all(in_flight: &Mutex<InFlight>, error: &RequestError) {
    let sent = {
        let mut in_flight = lock(in_flight);
        in_flight.open = false;
        std::mem::take(&mut in_flight.sent)
    };
    for (_, sent) in sent {
        let _ = sent.reply.send(Err(error.clone()));
    }
}

/// Counts an inbound link against its peer's bound while it lives.
struct InboundGuard {
    links: Arc<Links>,
    peer: PeerId,
}

impl Drop for InboundGuard {
    fn drop(&mut self) {
        let mut inbound = lock(&self.links.inbound);
        if let Some(count) = inbound.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                inbound.remove(&self.peer);
            }
        }
    }
}
