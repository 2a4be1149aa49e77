//! The mapping language: TOML rule files that turn provider events into Greenflash events.
//!
//! `load` compiles files (all paths and regexes parsed once, every problem located at
//! `file:line:col`), `apply` runs the compiled rules over a parsed body. See docs/mappings.md for
//! the operator's reference.

mod apply;
mod condition;
mod diagnostic;
mod expr;
mod load;
mod model;
mod path;
mod schema;
mod shape;
mod transform;

pub use apply::{Emitted, Failure, IdentifyError, Options, ProviderEvent, RuleTrace, Status};
pub use diagnostic::{Diagnostic, Severity};
pub use load::{Loaded, load_dir, load_texts};
pub use model::{Catalog, Field, Rule, Source};
pub use schema::schema;
