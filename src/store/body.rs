//! Webhook bodies as the stores keep them: LZ4-compressed when that makes them smaller. JSON
//! bodies shrink to a third or less, which is most of the bytes written per webhook, and the
//! compression runs on the caller's thread rather than in the database (PostgreSQL's own
//! compression of the same bodies cost its server more CPU than the rest of an accept).

/// How a stored body was encoded (the `body_encoding` column).
pub(super) enum StoredBody {
    Identity,
    Lz4(Vec<u8>),
}

/// A stored body that cannot be turned back into the one received.
#[derive(Debug, thiserror::Error)]
pub(super) enum BodyError {
    #[error("a stored body does not decompress: {0}")]
    Lz4(#[from] lz4_flex::block::DecompressError),
    #[error("unknown body encoding {0:?}")]
    UnknownEncoding(String),
}

impl StoredBody {
    pub(super) fn encode(body: &[u8]) -> Self {
        let compressed = lz4_flex::compress_prepend_size(body);
        if compressed.len() < body.len() {
            Self::Lz4(compressed)
        } else {
            Self::Identity
        }
    }

    pub(super) fn encoding(&self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Lz4(_) => "lz4",
        }
    }

    /// The bytes to store for `body`.
    pub(super) fn bytes<'b>(&'b self, body: &'b [u8]) -> &'b [u8] {
        match self {
            Self::Identity => body,
            Self::Lz4(compressed) => compressed,
        }
    }

    /// The body as received, from what the store kept.
    pub(super) fn decode(encoding: &str, stored: Vec<u8>) -> Result<Vec<u8>, BodyError> {
        match encoding {
            "identity" => Ok(stored),
            "lz4" => Ok(lz4_flex::decompress_size_prepended(&stored)?),
            other => Err(BodyError::UnknownEncoding(other.to_string())),
        }
    }
}
