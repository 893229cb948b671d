//! The host's transport, watched for what decides the fate of taken mail:
//! the end of its input, its cancellations and our answers. rmcp's serve
//! loop reads and writes through here one message at a time, so what this
//! sees is the order rmcp acts in: a cancellation seen before a call's
//! answer means rmcp drops that answer.

use std::sync::Arc;

use rmcp::model::{ClientNotification, JsonRpcMessage};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::RoleServer;

use crate::server::Shared;

pub(crate) struct Link<T> {
    pub(crate) inner: T,
    pub(crate) shared: Arc<Shared>,
}

impl<T: Transport<RoleServer>> Transport<RoleServer> for Link<T> {
    type Error = T::Error;

    /// An answer carries off what its call took; if it cannot be written
    /// (the host's end is gone) the mail goes back.
    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send + 'static {
        let held = match &item {
            JsonRpcMessage::Response(r) => self.shared.handouts.answered(&r.id),
            JsonRpcMessage::Error(e) => {
                // A protocol error carries no mail.
                if let Some(held) =
                    e.id.as_ref()
                        .and_then(|id| self.shared.handouts.answered(id))
                {
                    self.shared.put_back(held);
                }
                None
            }
            _ => None,
        };
        let shared = self.shared.clone();
        let sending = self.inner.send(item);
        async move {
            let sent = sending.await;
            if let (Some(held), Err(_)) = (held, &sent) {
                shared.put_back(held);
            }
            sent
        }
    }

    /// rmcp only cancels running calls 5 s after the input ends (it lets
    /// them finish and answer), and a waiting `receive` would meanwhile
    /// take mail that no one can read: the end is said at once
    /// ([`Shared::closing`]).
    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        let message = self.inner.receive().await;
        match &message {
            None => self.shared.closing.cancel(),
            Some(JsonRpcMessage::Request(call)) => self.shared.handouts.called(&call.id),
            Some(JsonRpcMessage::Notification(n)) => {
                if let ClientNotification::CancelledNotification(c) = &n.notification {
                    if let Some(id) = &c.params.request_id {
                        if let Some(held) = self.shared.handouts.cancelled(id) {
                            self.shared.put_back(held);
                        }
                    }
                }
            }
            _ => {}
        }
        message
    }

    fn close(&mut self) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}
