//! How `receive` shows a message to a person: the rule lives in
//! [`retalk_proto::display`], shared with `retalk mcp`'s text results.

pub use retalk_proto::display::{escape, human, valid_saved_name};
