//! Greenflash's side of the bridge: the event payload and its schema.

mod event;

pub use event::{Event, Influence, SchemaViolation, ValueType, is_uuid};
