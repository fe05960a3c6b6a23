//! Our blocks as commonware carries them: [`EngineBlock`] in commonware's
//! codec under the same BLAKE3 digest, and [`Blocks`], the finalized ones
//! marshal stores.

use bytes::{BufMut, Bytes};
use commonware_codec::{Buf, EncodeSize, Error as CodecError, RangeCfg, Read, Write};
use commonware_consensus::marshal::standard::Standard;
use commonware_consensus::marshal::{self, Identifier};
use commonware_consensus::types::Height;
use commonware_consensus::{BoundedBlock, Heightable};
use commonware_cryptography::Digestible;
use commonware_cryptography::blake3::Digest;
use idlegrid_types::ContentId;

use super::Scheme;
use crate::block::{BLOCK_BYTES_MAX, Block};

/// A [`Block`] as commonware carries it: our canonical bytes, length
/// prefixed, named by the same BLAKE3 digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineBlock(pub Block);

impl EngineBlock {
    /// Height 0: the parent of the first block, holding nothing.
    pub fn genesis(chain_id: &str) -> Self {
        Self(Block::genesis(chain_id))
    }
}

pub(super) fn digest_of(id: ContentId) -> Digest {
    Digest(*id.as_bytes())
}

pub(super) fn id_of(digest: &Digest) -> ContentId {
    ContentId::from_bytes(digest.0)
}

impl Write for EngineBlock {
    fn write(&self, buf: &mut impl BufMut) {
        Bytes::from(self.0.encode()).write(buf);
    }
}

impl EncodeSize for EngineBlock {
    fn encode_size(&self) -> usize {
        Bytes::from(self.0.encode()).encode_size()
    }
}

impl Read for EngineBlock {
    type Cfg = ();

    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        let bytes = Bytes::read_cfg(buf, &RangeCfg::from(0..=BLOCK_BYTES_MAX))?;
        Block::decode(&bytes)
            .map(Self)
            .map_err(|_| CodecError::Invalid("idlegrid block", "malformed"))
    }
}

impl Digestible for EngineBlock {
    type Digest = Digest;

    fn digest(&self) -> Digest {
        digest_of(self.0.digest())
    }
}

impl Heightable for EngineBlock {
    fn height(&self) -> Height {
        Height::new(self.0.height)
    }
}

impl commonware_consensus::Block for EngineBlock {
    fn parent(&self) -> Digest {
        digest_of(self.0.parent)
    }
}

impl BoundedBlock for EngineBlock {
    fn max_encode_size(_: &()) -> usize {
        // The bytes and a varint length prefix.
        BLOCK_BYTES_MAX + 10
    }
}

type Mailbox = marshal::core::Mailbox<Scheme, Standard<EngineBlock>>;

/// Finalized blocks, as marshal stores them.
#[derive(Clone)]
pub struct Blocks {
    pub(super) mailbox: Mailbox,
}

impl std::fmt::Debug for Blocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blocks").finish_non_exhaustive()
    }
}

impl Blocks {
    /// The finalized block at `height`, if this validator stores it.
    pub async fn at(&self, height: u64) -> Option<Block> {
        self.mailbox
            .get_block(Identifier::Height(Height::new(height)))
            .await
            .map(|block| block.inner().0.clone())
    }

    /// The highest finalized height this validator knows of (it may not
    /// have applied it yet).
    pub async fn finalized_height(&self) -> Option<u64> {
        self.mailbox
            .get_info(Identifier::Latest)
            .await
            .map(|(height, _)| height.get())
    }
}
