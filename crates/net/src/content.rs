//! Content by id over the work protocol, checked as it streams.
//!
//! A holder answers a `ContentTree` request with the content's length and
//! the BLAKE3 chaining values of its 64 KiB groups (a page of them at a
//! time, for content over 2 GiB), and `Content` requests a chunk (a whole
//! number of groups) at a time. A fetcher
//! ([`ContentFetch`]) checks that the values combine into the id it asked
//! for, then checks every group as it arrives: a holder that sends a wrong
//! byte is caught at the group that holds it, and what was checked so far
//! is kept, so the fetch resumes at the next group from any other holder.

use std::collections::VecDeque;
use std::io::Write;
use std::time::Duration;

use idlegrid_types::blob_tree::{self, GROUP_BYTES, TreeError, Verifier};
use idlegrid_types::codec::Bounded;
use idlegrid_types::{AccountId, ContentId};

use crate::overlay::Overlay;
use crate::protocol::{
    CONTENT_BYTES_MAX, CONTENT_CHUNK_BYTES_MAX, CONTENT_TREE_LEAVES_MAX, Request, Response,
};

const _: () = assert!(CONTENT_CHUNK_BYTES_MAX.is_multiple_of(GROUP_BYTES));

/// The bytes of content `len` long that one chunk from `offset` holds.
pub(crate) fn chunk_range(len: u64, offset: u64) -> std::ops::Range<u64> {
    let start = offset.min(len);
    start
        ..start
            .saturating_add(CONTENT_CHUNK_BYTES_MAX as u64)
            .min(len)
}

/// A chunk of `bytes` from `offset`.
pub fn content_chunk(bytes: &[u8], offset: u64) -> Response {
    let range = chunk_range(bytes.len() as u64, offset);
    // Within `bytes`, whose length is a usize.
    let range = range.start as usize..range.end as usize;
    Response::Content {
        total_bytes: bytes.len() as u64,
        bytes: Bounded::new(bytes[range].to_vec()).expect("at most one chunk"),
    }
}

/// The length of `bytes` and their group values from group `from` on.
pub fn content_tree(bytes: &[u8], from: u64) -> Response {
    tree_answer(bytes.len() as u64, &blob_tree::leaves(bytes), from)
}

/// The answer giving content's length and its group values from group
/// `from` on, as many as fit one message; a refusal for content over
/// [`CONTENT_BYTES_MAX`] or a page past the last group.
pub(crate) fn tree_answer(total_bytes: u64, leaves: &[[u8; 32]], from: u64) -> Response {
    if total_bytes > CONTENT_BYTES_MAX {
        return Response::refused(
            "too_large",
            format!("content of {total_bytes} bytes is too large to serve"),
        );
    }
    let start = match usize::try_from(from) {
        // Content of one group has no values: its one page is empty.
        Ok(start) if start < leaves.len() || start == 0 => start,
        _ => {
            return Response::refused(
                "no_such_group",
                format!("content of {} groups has no group {from}", leaves.len()),
            );
        }
    };
    let end = leaves.len().min(start + CONTENT_TREE_LEAVES_MAX);
    Response::ContentTree {
        total_bytes,
        leaves: Bounded::new(leaves[start..end].to_vec()).expect("one page"),
    }
}

/// Why a fetch from one holder stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The holder sent what is not the content (a wrong tree, a wrong
    /// byte, a chunk that does not fit): fetch from it no more.
    #[error("{from} sent bytes that are not {cid}: {why}")]
    Corrupt {
        from: AccountId,
        cid: ContentId,
        why: String,
    },
    /// The content is larger than the fetcher takes.
    #[error("{cid} is {len} bytes, over the limit of {max}")]
    TooLarge { cid: ContentId, len: u64, max: u64 },
    /// The holder could not or would not answer: another may.
    #[error("{0}")]
    Unavailable(String),
    /// What was checked could not be kept here (a disk write failed).
    #[error("failed to keep {cid}: {why}")]
    Local { cid: ContentId, why: String },
}

/// Fetching one piece of content, without network I/O: ask
/// [`ContentFetch::request`] of a holder, give its answer to
/// [`ContentFetch::answer`], until that gives back the sink the checked
/// bytes were written to (in memory by default, or a file). After a holder
/// fails, the next request to another one resumes where the checked bytes
/// end. Nothing reaches the sink before it is checked.
#[derive(Debug)]
pub struct ContentFetch<S: Write = Vec<u8>> {
    cid: ContentId,
    bytes_max: u64,
    verifier: Option<Verifier>,
    /// The tree's pages so far, until it is whole and checked: its length
    /// and group values.
    tree: Option<(u64, Vec<[u8; 32]>)>,
    /// The holder being asked ([`ContentFetch::asking`]): the pages of a
    /// tree all come from one.
    holder: Option<AccountId>,
    /// Checked bytes so far, a whole number of groups.
    checked: u64,
    /// Where checked bytes go; taken when the content is whole.
    sink: Option<S>,
}

impl ContentFetch {
    /// A fetch that keeps the content in memory.
    pub fn new(cid: ContentId, bytes_max: u64) -> Self {
        Self::into_sink(cid, bytes_max, Vec::new())
    }
}

impl<S: Write> ContentFetch<S> {
    /// A fetch that writes the content, checked, to `sink`.
    pub fn into_sink(cid: ContentId, bytes_max: u64, sink: S) -> Self {
        Self::resuming(cid, bytes_max, sink, 0)
    }

    /// A fetch whose first `held` bytes (whole groups) `sink` holds
    /// already: the rest is asked for and written after them. The caller
    /// checks the whole once it is done.
    pub fn resuming(cid: ContentId, bytes_max: u64, sink: S, held: u64) -> Self {
        Self {
            cid,
            bytes_max,
            verifier: None,
            tree: None,
            holder: None,
            checked: held,
            sink: Some(sink),
        }
    }

    /// Bytes checked so far.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// The content's length, once its tree is checked.
    pub fn total_bytes(&self) -> Option<u64> {
        self.verifier.as_ref().map(Verifier::len)
    }

    /// The requests that follow go to `holder`: a tree begun with another
    /// holder is begun again (pages from two holders are never mixed, so
    /// a tree that does not check is one holder's doing).
    pub fn asking(&mut self, holder: &AccountId) {
        if self.holder != Some(*holder) {
            self.holder = Some(*holder);
            self.tree = None;
        }
    }

    /// What to ask a holder next: the tree's next page, or the next chunk.
    pub fn request(&self) -> Request {
        match self.verifier {
            None => Request::ContentTree {
                cid: self.cid,
                from: self
                    .tree
                    .as_ref()
                    .map_or(0, |(_, leaves)| leaves.len() as u64),
            },
            Some(_) => Request::Content {
                cid: self.cid,
                offset: self.checked(),
            },
        }
    }

    /// Takes a holder's answer to [`ContentFetch::request`]: the sink
    /// holding the content once every group is checked, `None` while more
    /// is to be asked.
    pub fn answer(
        &mut self,
        from: &AccountId,
        response: Response,
    ) -> Result<Option<S>, FetchError> {
        let corrupt = |why: String| FetchError::Corrupt {
            from: *from,
            cid: self.cid,
            why,
        };
        match (&self.verifier, response) {
            (
                None,
                Response::ContentTree {
                    total_bytes,
                    leaves,
                },
            ) => {
                if total_bytes > self.bytes_max {
                    return Err(FetchError::TooLarge {
                        cid: self.cid,
                        len: total_bytes,
                        max: self.bytes_max,
                    });
                }
                let (len, mut tree) = self.tree.take().unwrap_or((total_bytes, Vec::new()));
                // Content of one group has no values (its id checks it).
                let groups = if total_bytes <= GROUP_BYTES as u64 {
                    0
                } else {
                    blob_tree::groups(total_bytes)
                };
                if total_bytes != len {
                    return Err(corrupt(format!(
                        "it said {total_bytes} bytes, and {len} before"
                    )));
                }
                if (leaves.is_empty() && groups > 0) || (tree.len() + leaves.len()) as u64 > groups
                {
                    return Err(corrupt(format!(
                        "a page of {} group values after {} of {groups}",
                        leaves.len(),
                        tree.len()
                    )));
                }
                tree.extend_from_slice(&leaves);
                if (tree.len() as u64) < groups {
                    self.tree = Some((len, tree));
                    return Ok(None);
                }
                let verifier = Verifier::new(self.cid, total_bytes, tree)
                    .map_err(|error| corrupt(error.to_string()))?;
                if !self.checked.is_multiple_of(GROUP_BYTES as u64)
                    || (self.checked > 0 && self.checked >= total_bytes)
                {
                    return Err(FetchError::Local {
                        cid: self.cid,
                        why: format!(
                            "what is held ({} bytes) cannot be resumed in {total_bytes}",
                            self.checked
                        ),
                    });
                }
                self.verifier = Some(verifier);
                Ok(None)
            }
            (Some(verifier), Response::Content { total_bytes, bytes }) => {
                if total_bytes != verifier.len() {
                    return Err(corrupt(format!(
                        "it said {total_bytes} bytes, and its tree {}",
                        verifier.len()
                    )));
                }
                let mut group = self.checked() / GROUP_BYTES as u64;
                let mut rest: &[u8] = &bytes;
                if rest.is_empty() && self.checked() < verifier.len() {
                    return Err(corrupt("an empty chunk".to_owned()));
                }
                while !rest.is_empty() {
                    let range = blob_tree::group_range(verifier.len(), group);
                    let take = usize::try_from(range.end - range.start).unwrap_or(usize::MAX);
                    if rest.len() < take {
                        return Err(corrupt(format!("a chunk ends inside group {group}")));
                    }
                    let (piece, after) = rest.split_at(take);
                    verifier.check(group, piece).map_err(|error| match error {
                        TreeError::NoSuchGroup { .. } => corrupt("bytes past the end".to_owned()),
                        other => corrupt(other.to_string()),
                    })?;
                    let cid = self.cid;
                    self.sink
                        .as_mut()
                        .ok_or_else(|| FetchError::Local {
                            cid,
                            why: "the content was taken already".to_owned(),
                        })?
                        .write_all(piece)
                        .map_err(|error| FetchError::Local {
                            cid,
                            why: error.to_string(),
                        })?;
                    self.checked += piece.len() as u64;
                    rest = after;
                    group += 1;
                }
                if self.checked() == verifier.len() {
                    // An empty blob has one empty group, which the loop
                    // above never checks.
                    if verifier.is_empty() {
                        verifier
                            .check(0, &[])
                            .map_err(|error| corrupt(error.to_string()))?;
                    }
                    return Ok(self.sink.take());
                }
                Ok(None)
            }
            (_, Response::Refused { message, .. }) => Err(FetchError::Unavailable(format!(
                "{from} refused {}: {}",
                self.cid, &*message
            ))),
            (_, other) => Err(corrupt(format!(
                "it answered {} with {}",
                self.request().name(),
                response_name(&other)
            ))),
        }
    }
}

fn response_name(response: &Response) -> &'static str {
    match response {
        Response::Ok => "ok",
        Response::Refused { .. } => "a refusal",
        Response::Content { .. } => "content",
        Response::Offer(_) => "an offer",
        Response::Voucher { .. } => "a voucher",
        Response::ContentTree { .. } => "a content tree",
    }
}

/// Fetches content by id from a peer, checking each 64 KiB group as it
/// arrives.
pub async fn fetch_content(
    overlay: &Overlay,
    from: &AccountId,
    cid: ContentId,
    bytes_max: usize,
) -> Result<Vec<u8>, String> {
    fetch_content_from(overlay, &[], from, cid, bytes_max).await
}

/// How long a holder named in a batch gets to answer each request before
/// the next is asked: it may be unreachable from here.
pub const HOLDER_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Chunk requests a fetch keeps in flight to one holder: the next chunks
/// travel while one is checked.
pub const CHUNKS_IN_FLIGHT: usize = 4;
/// Times the source is asked when exchanges with it break.
const SOURCE_TRIES: usize = 3;

/// Fetches content from `holders` in turn, then from `source` (who is
/// expected to hold it), each resuming where the checked bytes end; a
/// holder that sends a wrong byte or cannot answer is left for the next.
pub async fn fetch_content_from(
    overlay: &Overlay,
    holders: &[AccountId],
    source: &AccountId,
    cid: ContentId,
    bytes_max: usize,
) -> Result<Vec<u8>, String> {
    fetch_content_into(
        overlay,
        holders,
        source,
        cid,
        bytes_max as u64,
        Vec::new(),
        0,
    )
    .await
}

/// [`fetch_content_from`], writing the checked bytes to `sink` as they
/// arrive rather than holding them, after the first `held` bytes (whole
/// groups) it holds already: gives the sink back once the content is
/// whole.
pub async fn fetch_content_into<S: Write>(
    overlay: &Overlay,
    holders: &[AccountId],
    source: &AccountId,
    cid: ContentId,
    bytes_max: u64,
    sink: S,
    held: u64,
) -> Result<S, String> {
    let asked = Asked {
        named: holders,
        look_up: false,
        source: Some(source),
    };
    fetch_from(overlay, asked, cid, bytes_max, sink, held).await
}

/// [`fetch_content_into`] for content peers may hold already (a file a
/// job's tasks share): after `holders`, and before the `source`, peers
/// that announced holding it are asked (at most
/// [`ANNOUNCED_HOLDERS_TRIED`] of them), so the source serves only what
/// nobody else can. Without a source, only they are asked.
pub async fn fetch_shared_content_into<S: Write>(
    overlay: &Overlay,
    holders: &[AccountId],
    source: Option<&AccountId>,
    cid: ContentId,
    bytes_max: u64,
    sink: S,
    held: u64,
) -> Result<S, String> {
    let asked = Asked {
        named: holders,
        look_up: true,
        source,
    };
    fetch_from(overlay, asked, cid, bytes_max, sink, held).await
}

/// Peers that announced holding some content asked by a fetch at most (a
/// peer may announce what it does not serve; each costs a try).
pub const ANNOUNCED_HOLDERS_TRIED: usize = 4;
/// How long a fetch waits for a lookup of announced holders.
pub const HOLDER_LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// Peers that announced holding `cid`, not yet `tried` nor the `source`.
async fn announced_holders(
    overlay: &Overlay,
    cid: ContentId,
    tried: &[AccountId],
    source: Option<&AccountId>,
) -> Vec<AccountId> {
    let found = tokio::time::timeout(HOLDER_LOOKUP_TIMEOUT, overlay.holders(cid))
        .await
        .unwrap_or_default();
    found
        .into_iter()
        .filter(|holder| !tried.contains(holder) && Some(holder) != source)
        .take(ANNOUNCED_HOLDERS_TRIED)
        .collect()
}

/// Whom a fetch asks, in order: the holders named, then (if it looks
/// them up) peers that announce the content, then the source.
struct Asked<'a> {
    named: &'a [AccountId],
    look_up: bool,
    source: Option<&'a AccountId>,
}

async fn fetch_from<S: Write>(
    overlay: &Overlay,
    Asked {
        named: holders,
        look_up,
        source,
    }: Asked<'_>,
    cid: ContentId,
    bytes_max: u64,
    sink: S,
    held: u64,
) -> Result<S, String> {
    let mut fetch = ContentFetch::resuming(cid, bytes_max, sink, held);
    let mut failures = Vec::new();
    let mut tried: Vec<AccountId> = Vec::with_capacity(holders.len() + 1);
    let mut next: VecDeque<AccountId> = holders.iter().copied().collect();
    let mut looked_up = !look_up;
    // The source is asked again when an exchange with it breaks (a
    // connection closed under a transfer): the fetch goes on from what
    // was checked.
    let mut source_tries = 0;
    loop {
        let holder = match next.pop_front() {
            Some(holder) => {
                if Some(&holder) != source && tried.contains(&holder) {
                    continue;
                }
                holder
            }
            None if !looked_up => {
                looked_up = true;
                next.extend(announced_holders(overlay, cid, &tried, source).await);
                continue;
            }
            None => match source {
                Some(source) if source_tries < SOURCE_TRIES => {
                    source_tries += 1;
                    *source
                }
                _ => break,
            },
        };
        tried.push(holder);
        let from_source = Some(&holder) == source;
        let patience = (!from_source).then_some(HOLDER_ANSWER_TIMEOUT);
        match from_holder(overlay, &holder, &mut fetch, patience).await {
            Ok(bytes) => return Ok(bytes),
            Err(error @ (FetchError::TooLarge { .. } | FetchError::Local { .. })) => {
                return Err(error.to_string());
            }
            Err(error) => {
                if matches!(error, FetchError::Corrupt { .. }) {
                    // Only a liar serves bytes that do not check (a store
                    // checks what it serves): never ask it again.
                    tracing::warn!(%holder, %error, "blocking a holder that sent wrong content");
                    overlay.block(&holder, error.to_string());
                }
                let broken = matches!(error, FetchError::Unavailable(_));
                failures.push(error.to_string());
                if from_source && !broken {
                    break;
                }
            }
        }
    }
    if failures.is_empty() {
        return Err(format!(
            "failed to fetch {cid}: nobody was found to hold it"
        ));
    }
    Err(format!("failed to fetch {cid}: {}", failures.join("; ")))
}

/// Takes what `holder` gives of the content: the tree if not yet checked,
/// then its chunks from where the checked bytes end, several in flight.
async fn from_holder<S: Write>(
    overlay: &Overlay,
    holder: &AccountId,
    fetch: &mut ContentFetch<S>,
    patience: Option<Duration>,
) -> Result<S, FetchError> {
    let answer = |request: Request| {
        let sent = overlay.send(holder, request);
        async move {
            let answered = match patience {
                Some(patience) => tokio::time::timeout(patience, sent).await.map_err(|_| {
                    FetchError::Unavailable(format!("{holder} did not answer in {patience:?}"))
                })?,
                None => sent.await,
            };
            answered.map_err(|error| FetchError::Unavailable(format!("{holder}: {error}")))
        }
    };
    // The tree, a page at a time.
    fetch.asking(holder);
    while fetch.total_bytes().is_none() {
        let tree = answer(fetch.request()).await?;
        if let Some(bytes) = fetch.answer(holder, tree)? {
            return Ok(bytes);
        }
    }
    let total = fetch.total_bytes().unwrap_or(0);
    let mut next = fetch.checked();
    let mut in_flight = VecDeque::with_capacity(CHUNKS_IN_FLIGHT);
    loop {
        // Empty content is still asked for once: its one empty group.
        while in_flight.len() < CHUNKS_IN_FLIGHT && (next < total || (total == 0 && next == 0)) {
            in_flight.push_back(answer(Request::Content {
                cid: fetch.cid,
                offset: next,
            }));
            next = next.saturating_add(CONTENT_CHUNK_BYTES_MAX as u64).max(1);
        }
        let Some(pending) = in_flight.pop_front() else {
            return Err(FetchError::Unavailable(format!(
                "{holder} sent every chunk and the content is not whole"
            )));
        };
        if let Some(bytes) = fetch.answer(holder, pending.await?)? {
            return Ok(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(len: usize) -> Vec<u8> {
        (0..len).map(|index| (index % 251) as u8).collect()
    }

    /// A holder of `bytes` that answers honestly, or with `corrupt` applied
    /// to every chunk it sends.
    fn serve(bytes: &[u8], request: Request, corrupt: Option<usize>) -> Response {
        match request {
            Request::ContentTree { from, .. } => content_tree(bytes, from),
            Request::Content { offset, .. } => {
                let mut response = content_chunk(bytes, offset);
                if let (Some(at), Response::Content { bytes: chunk, .. }) = (corrupt, &mut response)
                {
                    let mut changed = chunk.clone().into_inner();
                    let start = usize::try_from(offset).expect("small");
                    if (start..start + changed.len()).contains(&at) {
                        changed[at - start] ^= 1;
                    }
                    *chunk = Bounded::new(changed).expect("same length");
                }
                response
            }
            other => panic!("asked {other:?}"),
        }
    }

    #[test]
    fn content_of_every_size_arrives_checked() {
        let holder = AccountId::from_bytes([1; 32]);
        for len in [
            0,
            1,
            GROUP_BYTES,
            GROUP_BYTES + 1,
            3 * CONTENT_CHUNK_BYTES_MAX + 17,
        ] {
            let bytes = blob(len);
            let mut fetch = ContentFetch::new(ContentId::of(&bytes), 16 << 20);
            let fetched = loop {
                let answer = serve(&bytes, fetch.request(), None);
                if let Some(done) = fetch.answer(&holder, answer).expect("honest") {
                    break done;
                }
            };
            assert_eq!(fetched, bytes, "{len} bytes");
        }
    }

    #[test]
    fn a_lying_holder_is_caught_at_its_first_wrong_group_and_another_finishes() {
        let liar = AccountId::from_bytes([2; 32]);
        let honest = AccountId::from_bytes([3; 32]);
        let bytes = blob(2 * CONTENT_CHUNK_BYTES_MAX + 5);
        let cid = ContentId::of(&bytes);
        let wrong = CONTENT_CHUNK_BYTES_MAX + 3 * GROUP_BYTES + 10;
        let mut fetch = ContentFetch::new(cid, 16 << 20);
        let error = loop {
            let answer = serve(&bytes, fetch.request(), Some(wrong));
            match fetch.answer(&liar, answer) {
                Ok(None) => {}
                Ok(Some(_)) => panic!("corrupt bytes accepted"),
                Err(error) => break error,
            }
        };
        let FetchError::Corrupt { from, why, .. } = &error else {
            panic!("{error}");
        };
        assert_eq!(*from, liar);
        assert!(why.contains("group 19"), "{why}");
        // What came before the wrong group was checked and kept; the
        // honest holder sends only the rest.
        let kept = (CONTENT_CHUNK_BYTES_MAX + 3 * GROUP_BYTES) as u64;
        assert_eq!(fetch.checked(), kept);
        let mut asked = Vec::new();
        let fetched = loop {
            let request = fetch.request();
            asked.push(request.clone());
            let answer = serve(&bytes, request, None);
            if let Some(done) = fetch.answer(&honest, answer).expect("honest") {
                break done;
            }
        };
        assert_eq!(fetched, bytes);
        assert_eq!(asked[0], Request::Content { cid, offset: kept });
    }

    #[test]
    fn a_wrong_tree_a_short_chunk_and_oversized_content_are_refused() {
        let holder = AccountId::from_bytes([4; 32]);
        let bytes = blob(3 * GROUP_BYTES);
        let cid = ContentId::of(&bytes);

        // A tree of other bytes.
        let mut fetch = ContentFetch::new(cid, 1 << 20);
        let other = content_tree(&blob(3 * GROUP_BYTES + 1), 0);
        assert!(matches!(
            fetch.answer(&holder, other),
            Err(FetchError::Corrupt { .. })
        ));

        // A chunk that stops inside a group.
        let mut fetch = ContentFetch::new(cid, 1 << 20);
        fetch
            .answer(&holder, content_tree(&bytes, 0))
            .expect("the tree");
        let short = Response::Content {
            total_bytes: bytes.len() as u64,
            bytes: Bounded::new(bytes[..GROUP_BYTES + 1].to_vec()).expect("small"),
        };
        let error = fetch.answer(&holder, short).expect_err("short");
        assert!(error.to_string().contains("inside group 1"), "{error}");
        assert_eq!(
            fetch.checked(),
            GROUP_BYTES as u64,
            "the whole group before it is kept"
        );

        // More than the fetcher takes, refused before any byte arrives.
        let mut fetch = ContentFetch::new(cid, GROUP_BYTES as u64);
        assert!(matches!(
            fetch.answer(&holder, content_tree(&bytes, 0)),
            Err(FetchError::TooLarge { .. })
        ));

        // A refusal leaves the fetch to another holder.
        let mut fetch = ContentFetch::new(cid, 1 << 20);
        assert!(matches!(
            fetch.answer(&holder, Response::refused("not_found", "no")),
            Err(FetchError::Unavailable(_))
        ));
    }

    /// A holder whose tree answers come in pages of `page` values.
    fn paged(bytes: &[u8], request: Request, page: usize) -> Response {
        match request {
            Request::ContentTree { from, .. } => {
                let leaves = blob_tree::leaves(bytes);
                let start = (from as usize).min(leaves.len());
                let end = leaves.len().min(start + page);
                Response::ContentTree {
                    total_bytes: bytes.len() as u64,
                    leaves: Bounded::new(leaves[start..end].to_vec()).expect("a page"),
                }
            }
            other => serve(bytes, other, None),
        }
    }

    #[test]
    fn a_tree_in_pages_is_asked_for_page_by_page_and_never_mixed_across_holders() {
        let (first, second) = (
            AccountId::from_bytes([1; 32]),
            AccountId::from_bytes([2; 32]),
        );
        let bytes = blob(10 * GROUP_BYTES + 5);
        let cid = ContentId::of(&bytes);
        let mut fetch = ContentFetch::new(cid, 1 << 20);
        // The first holder's first page, then it goes away.
        fetch.asking(&first);
        let answer = paged(&bytes, fetch.request(), 4);
        assert!(fetch.answer(&first, answer).expect("a page").is_none());
        assert_eq!(fetch.request(), Request::ContentTree { cid, from: 4 });
        assert_eq!(fetch.total_bytes(), None, "not checked before it is whole");
        // The second holder's pages: the tree begins again, three pages of
        // the eleven values.
        fetch.asking(&second);
        let mut asked = Vec::new();
        let fetched = loop {
            let request = fetch.request();
            asked.push(request.clone());
            let answer = paged(&bytes, request, 4);
            if let Some(done) = fetch.answer(&second, answer).expect("honest") {
                break done;
            }
        };
        assert_eq!(fetched, bytes);
        let pages: Vec<_> = asked
            .iter()
            .filter_map(|request| match request {
                Request::ContentTree { from, .. } => Some(*from),
                _ => None,
            })
            .collect();
        assert_eq!(pages, vec![0, 4, 8]);
    }

    #[test]
    fn tree_answers_come_in_pages_within_a_message() {
        let leaves = vec![[7u8; 32]; CONTENT_TREE_LEAVES_MAX + 5];
        let total = leaves.len() as u64 * GROUP_BYTES as u64;
        let page = |from| match tree_answer(total, &leaves, from) {
            Response::ContentTree {
                total_bytes,
                leaves,
            } => {
                assert_eq!(total_bytes, total);
                Some(leaves.len())
            }
            _ => None,
        };
        assert_eq!(page(0), Some(CONTENT_TREE_LEAVES_MAX));
        assert_eq!(page(CONTENT_TREE_LEAVES_MAX as u64), Some(5));
        assert_eq!(page(CONTENT_TREE_LEAVES_MAX as u64 + 5), None);
        assert_eq!(page(u64::MAX), None);
        // Content of one group: one empty page.
        assert!(matches!(
            content_tree(b"small", 0),
            Response::ContentTree { leaves, .. } if leaves.is_empty()
        ));
        // Over the bound, refused.
        assert!(matches!(
            tree_answer(CONTENT_BYTES_MAX + 1, &leaves, 0),
            Response::Refused { .. }
        ));
    }
}
