//! Duo Chat's ReAct agent (`POST /v2/chat/agent`): the tools it may offer, the GitLab versions
//! they need, and the reading of the model's streamed text into NDJSON events. No HTTP here: the
//! endpoint is `api::v2::chat`.

pub mod react;
pub mod tools;
pub mod version;
