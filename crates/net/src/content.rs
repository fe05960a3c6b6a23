//! Content by id over the work protocol: a holder answers `Content`
//! requests a chunk at a time, and a fetcher puts the chunks together and
//! checks the bytes against their id.

use idlegrid_types::codec::Bounded;
use idlegrid_types::{AccountId, ContentId};

use crate::overlay::Overlay;
use crate::protocol::{CONTENT_CHUNK_BYTES_MAX, Request, Response};

/// A chunk of `bytes` from `offset`.
pub fn content_chunk(bytes: &[u8], offset: u64) -> Response {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let end = (start + CONTENT_CHUNK_BYTES_MAX).min(bytes.len());
    Response::Content {
        total_bytes: bytes.len() as u64,
        bytes: Bounded::new(bytes[start..end].to_vec()).expect("at most one chunk"),
    }
}

/// Fetches content by id from a peer, chunk by chunk, and checks its id.
pub async fn fetch_content(
    overlay: &Overlay,
    from: &AccountId,
    cid: ContentId,
    bytes_max: usize,
) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    loop {
        let request = Request::Content {
            cid,
            offset: bytes.len() as u64,
        };
        match overlay.request(from, request).await {
            Ok(Response::Content {
                total_bytes,
                bytes: chunk,
            }) => {
                if total_bytes > bytes_max as u64 {
                    return Err(format!(
                        "{cid} is {total_bytes} bytes, over the limit of {bytes_max}"
                    ));
                }
                if chunk.is_empty() && (bytes.len() as u64) < total_bytes {
                    return Err(format!("{from} sent an empty chunk of {cid}"));
                }
                bytes.extend_from_slice(&chunk);
                if bytes.len() as u64 >= total_bytes {
                    break;
                }
            }
            Ok(Response::Refused { message, .. }) => {
                return Err(format!("{from} refused {cid}: {}", &*message));
            }
            Ok(Response::Ok | Response::Offer(_) | Response::Voucher { .. }) => {
                return Err(format!("{from} answered a content request without content"));
            }
            Err(error) => return Err(format!("failed to fetch {cid}: {error}")),
        }
    }
    if ContentId::of(&bytes) != cid {
        return Err(format!("{from} sent bytes that are not {cid}"));
    }
    Ok(bytes)
}
