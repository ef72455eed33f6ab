//! Per-role views of the config: each role is sent only what it needs,
//! serialized, and seals what it decodes (`sys::seal`).

use crate::proc::Role;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// What one role receives. The variant must match the role that decodes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum View {
    Control(ControlView),
    Lka(LkaView),
    Queue(QueueView),
    Scheduler(SchedulerView),
    Dispatcher(DispatcherView),
    Ca(CaView),
}

impl View {
    pub fn role(&self) -> Role {
        match self {
            View::Control(_) => Role::Control,
            View::Lka(_) => Role::Lka,
            View::Queue(_) => Role::Queue,
            View::Scheduler(_) => Role::Scheduler,
            View::Dispatcher(_) => Role::Dispatcher,
            View::Ca(_) => Role::Ca,
        }
    }
}

/// Settings every role shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Common {
    /// This host's name, for banners and Received lines.
    pub hostname: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlView {
    pub common: Common,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LkaView {
    pub common: Common,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueView {
    pub common: Common,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulerView {
    pub common: Common,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaView {
    pub common: Common,
}

/// One bound SMTP listener: the socket comes as a descriptor with the
/// same index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerView {
    pub addr: SocketAddr,
    pub hostname: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatcherView {
    pub common: Common,
    pub listeners: Vec<ListenerView>,
}

/// Build the view for `role` from the parsed config and what the parent bound.
pub fn for_role(role: Role, hostname: &str, listeners: &[ListenerView]) -> Option<View> {
    let common = Common {
        hostname: hostname.to_string(),
    };
    Some(match role {
        Role::Parent => return None,
        Role::Control => View::Control(ControlView { common }),
        Role::Lka => View::Lka(LkaView { common }),
        Role::Queue => View::Queue(QueueView { common }),
        Role::Scheduler => View::Scheduler(SchedulerView { common }),
        Role::Ca => View::Ca(CaView { common }),
        Role::Dispatcher => View::Dispatcher(DispatcherView {
            common,
            listeners: listeners.to_vec(),
        }),
    })
}
