//! The platform's side of OSB: [`OsbDriver`] runs an operation to its end, polling
//! `last_operation` after a 202 (honouring `Retry-After` and the plan's
//! `maximum_polling_duration`), and mitigates orphans as the spec's table says: after a
//! provision or bind that failed with a 5xx, a timeout, a malformed or undefined 2xx,
//! or an asynchronous `failed`, it deletes what the broker may have created.

use std::sync::Arc;
use std::time::Duration;

use deis_core::broker::{
    BindRequest, BindingResponse, BrokerError, DeleteRequest, LastOperation, OperationState, PollRequest,
    ProvisionRequest, ProvisionResponse, RequestContext, Result, ServiceBroker, Status,
};

/// How the driver polls.
#[derive(Debug, Clone, Copy)]
pub struct PollPolicy {
    /// Wait between polls when the broker sends no `Retry-After`.
    pub interval: Duration,
    /// The platform's own limit on how long an operation may take (a plan's
    /// `maximum_polling_duration`, when shorter, wins).
    pub max_duration: Duration,
    /// The longest `Retry-After` honoured (a broker can't stall the platform).
    pub max_retry_after: Duration,
    /// How many deletes orphan mitigation tries.
    pub mitigation_attempts: u32,
}

impl Default for PollPolicy {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            max_duration: Duration::from_secs(30 * 60),
            max_retry_after: Duration::from_secs(60),
            mitigation_attempts: 3,
        }
    }
}

/// Whether a failed provision or bind calls for orphan mitigation (the spec's table):
/// 5xx, timeouts and 2xx answers that are not what the spec defines; never a 4xx or a
/// request that did not reach the broker.
pub fn needs_orphan_mitigation(e: &BrokerError) -> bool {
    match e {
        BrokerError::Timeout(_) | BrokerError::Backend(_) | BrokerError::Store(_) => true,
        BrokerError::Remote { status, .. } => *status == 200 || (201..300).contains(status) || *status >= 500,
        _ => false,
    }
}

/// Runs OSB operations to their end against one broker.
#[derive(Debug, Clone)]
pub struct OsbDriver {
    broker: Arc<dyn ServiceBroker>,
    policy: PollPolicy,
}

/// An operation's final failure as an error.
fn failed(what: &str, op: &LastOperation) -> BrokerError {
    BrokerError::Backend(format!("{what} failed: {}", op.description.as_deref().unwrap_or("the broker gave no reason")))
}

impl OsbDriver {
    /// A driver of `broker` with the default [`PollPolicy`].
    pub fn new(broker: Arc<dyn ServiceBroker>) -> Self {
        Self { broker, policy: PollPolicy::default() }
    }

    /// Sets the poll policy.
    pub fn with_policy(mut self, policy: PollPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The broker driven.
    pub fn broker(&self) -> &Arc<dyn ServiceBroker> {
        &self.broker
    }

    /// Polls until the operation ends; `Gone` ends a delete successfully. Errors while
    /// polling are retried (the spec: keep polling until a valid answer) until the
    /// deadline, after which the operation counts as failed ([`BrokerError::Timeout`]).
    async fn wait(
        &self,
        ctx: &RequestContext,
        target: Target<'_>,
        poll: PollRequest,
        max_polling: Option<Duration>,
        deleting: bool,
    ) -> Result<LastOperation> {
        let limit = max_polling.map_or(self.policy.max_duration, |m| m.min(self.policy.max_duration));
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let answer = match target {
                Target::Instance(i) => self.broker.last_operation(ctx, i, poll.clone()).await,
                Target::Binding(i, b) => self.broker.binding_last_operation(ctx, i, b, poll.clone()).await,
            };
            let wait = match answer {
                Ok(op) if op.state != OperationState::InProgress => return Ok(op),
                Ok(op) => op.retry_after.map_or(self.policy.interval, |r| r.min(self.policy.max_retry_after)),
                Err(BrokerError::Gone(_)) if deleting => return Ok(LastOperation::new(OperationState::Succeeded)),
                Err(e) => {
                    tracing::debug!(error = %e, "polling last_operation; trying again");
                    self.policy.interval
                }
            };
            if tokio::time::Instant::now() + wait > deadline {
                return Err(BrokerError::Timeout(limit));
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Provisions and waits until the instance is ready. `max_polling` is the plan's
    /// `maximum_polling_duration`. On a failure that calls for it, deprovisions first.
    pub async fn provision(
        &self,
        ctx: &RequestContext,
        instance_id: &str,
        request: ProvisionRequest,
        max_polling: Option<Duration>,
    ) -> Result<ProvisionResponse> {
        let delete = DeleteRequest { service_id: request.service_id.clone(), plan_id: request.plan_id.clone() };
        let outcome = async {
            let reply = self.broker.provision(ctx, instance_id, request.clone(), true).await?;
            if reply.status != Status::Accepted {
                return Ok(reply.body);
            }
            let poll = poll_request(&request.service_id, &request.plan_id, reply.body.operation.clone());
            let op = self.wait(ctx, Target::Instance(instance_id), poll, max_polling, false).await?;
            match op.state {
                OperationState::Succeeded => Ok(reply.body),
                _ => Err(failed("provisioning", &op)),
            }
        }
        .await;
        if let Err(e) = &outcome
            && needs_orphan_mitigation(e)
        {
            tracing::warn!(instance = %instance_id, error = %e, "provisioning failed: deprovisioning the orphan");
            if let Err(m) = self.deprovision(&RequestContext::default(), instance_id, delete, max_polling).await {
                tracing::error!(instance = %instance_id, error = %m, "orphan mitigation failed; the instance may remain");
            }
        }
        outcome
    }

    /// Binds and waits; returns the binding with its credentials. On a failure that calls
    /// for it, unbinds first.
    pub async fn bind(
        &self,
        ctx: &RequestContext,
        instance_id: &str,
        binding_id: &str,
        request: BindRequest,
        max_polling: Option<Duration>,
    ) -> Result<BindingResponse> {
        let delete = DeleteRequest { service_id: request.service_id.clone(), plan_id: request.plan_id.clone() };
        let outcome = async {
            let reply = self.broker.bind(ctx, instance_id, binding_id, request.clone(), true).await?;
            if reply.status != Status::Accepted {
                return Ok(reply.body);
            }
            let poll = poll_request(&request.service_id, &request.plan_id, reply.body.operation.clone());
            let op = self.wait(ctx, Target::Binding(instance_id, binding_id), poll, max_polling, false).await?;
            match op.state {
                OperationState::Succeeded => self.broker.binding(ctx, instance_id, binding_id).await,
                _ => Err(failed("binding", &op)),
            }
        }
        .await;
        if let Err(e) = &outcome
            && needs_orphan_mitigation(e)
        {
            tracing::warn!(binding = %binding_id, error = %e, "binding failed: unbinding the orphan");
            if let Err(m) = self.unbind(&RequestContext::default(), instance_id, binding_id, delete, max_polling).await
            {
                tracing::error!(binding = %binding_id, error = %m, "orphan mitigation failed; the binding may remain");
            }
        }
        outcome
    }

    /// Unbinds and waits; a binding that is already gone counts as unbound. Retries a
    /// failed attempt up to the policy's `mitigation_attempts`.
    pub async fn unbind(
        &self,
        ctx: &RequestContext,
        instance_id: &str,
        binding_id: &str,
        request: DeleteRequest,
        max_polling: Option<Duration>,
    ) -> Result<()> {
        self.delete(ctx, Target::Binding(instance_id, binding_id), request, max_polling).await
    }

    /// Deprovisions and waits; an instance that is already gone counts as deleted.
    /// Retries a failed attempt up to the policy's `mitigation_attempts`.
    pub async fn deprovision(
        &self,
        ctx: &RequestContext,
        instance_id: &str,
        request: DeleteRequest,
        max_polling: Option<Duration>,
    ) -> Result<()> {
        self.delete(ctx, Target::Instance(instance_id), request, max_polling).await
    }

    async fn delete(
        &self,
        ctx: &RequestContext,
        target: Target<'_>,
        request: DeleteRequest,
        max_polling: Option<Duration>,
    ) -> Result<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = match target {
                Target::Instance(i) => self.broker.deprovision(ctx, i, request.clone(), true).await,
                Target::Binding(i, b) => self.broker.unbind(ctx, i, b, request.clone(), true).await,
            };
            let outcome = match sent {
                Ok(reply) if reply.status == Status::Accepted => {
                    let poll = poll_request(&request.service_id, &request.plan_id, reply.body.operation);
                    match self.wait(ctx, target, poll, max_polling, true).await {
                        Ok(op) if op.state == OperationState::Succeeded => Ok(()),
                        Ok(op) => Err(failed("deleting", &op)),
                        Err(e) => Err(e),
                    }
                }
                Ok(_) | Err(BrokerError::Gone(_)) => Ok(()),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => return Ok(()),
                Err(e) if e.is_client_error() || attempt >= self.policy.mitigation_attempts => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "deleting failed; trying again");
                    tokio::time::sleep(self.policy.interval * attempt).await;
                }
            }
        }
    }
}

/// The poll of an operation on a resource of `service_id` and `plan_id`.
fn poll_request(service_id: &str, plan_id: &str, operation: Option<String>) -> PollRequest {
    PollRequest { service_id: Some(service_id.into()), plan_id: Some(plan_id.into()), operation }
}

/// What an operation is on.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    Instance(&'a str),
    Binding(&'a str, &'a str),
}
