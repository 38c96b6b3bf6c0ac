"""A third-party reference broker written with PyPI `openbrokerapi`, for testing our
OSB client: service `ref` with plan `async`, whose provisions are asynchronous
(`in progress` for the first two polls, with `Retry-After: 0`... as openbrokerapi
sends none, the client polls at its own interval), and synchronous binds handing out
`{"uri": "ref://<instance>/<binding>"}`. State in memory.

Usage: python3 openbroker_ref.py PORT USERNAME PASSWORD
"""

import logging
import sys

from openbrokerapi import api, errors
from openbrokerapi.catalog import ServicePlan
from openbrokerapi.service_broker import (
    Binding,
    DeprovisionServiceSpec,
    GetBindingSpec,
    LastOperation,
    OperationState,
    ProvisionedServiceSpec,
    ProvisionState,
    Service,
    ServiceBroker,
    UnbindDetails,
    UnbindSpec,
)


class RefBroker(ServiceBroker):
    def __init__(self):
        self.instances = {}  # id -> polls seen
        self.bindings = {}

    def catalog(self):
        return Service(
            id="ref-service",
            name="ref",
            description="openbrokerapi reference broker",
            bindable=True,
            plans=[ServicePlan(id="ref-plan-async", name="async", description="asynchronous provisioning")],
        )

    def provision(self, instance_id, details, async_allowed, **kwargs):
        if not async_allowed:
            raise errors.ErrAsyncRequired()
        if instance_id in self.instances:
            raise errors.ErrInstanceAlreadyExists()
        self.instances[instance_id] = 0
        return ProvisionedServiceSpec(state=ProvisionState.IS_ASYNC, operation="provisioning")

    def last_operation(self, instance_id, operation_data, **kwargs):
        if instance_id not in self.instances:
            raise errors.ErrInstanceDoesNotExist()
        self.instances[instance_id] += 1
        if self.instances[instance_id] < 3:
            return LastOperation(OperationState.IN_PROGRESS, "creating")
        return LastOperation(OperationState.SUCCEEDED, "created")

    def bind(self, instance_id, binding_id, details, async_allowed, **kwargs):
        if instance_id not in self.instances:
            raise errors.ErrBadRequest("no such instance")
        self.bindings[(instance_id, binding_id)] = True
        return Binding(credentials={"uri": f"ref://{instance_id}/{binding_id}"})

    def get_binding(self, instance_id, binding_id, **kwargs):
        if (instance_id, binding_id) not in self.bindings:
            raise errors.ErrBindingDoesNotExist()
        return GetBindingSpec(credentials={"uri": f"ref://{instance_id}/{binding_id}"})

    def unbind(self, instance_id, binding_id, details: UnbindDetails, async_allowed, **kwargs):
        if self.bindings.pop((instance_id, binding_id), None) is None:
            raise errors.ErrBindingDoesNotExist()
        return UnbindSpec(is_async=False)

    def deprovision(self, instance_id, details, async_allowed, **kwargs):
        if self.instances.pop(instance_id, None) is None:
            raise errors.ErrInstanceDoesNotExist()
        return DeprovisionServiceSpec(is_async=False)


if __name__ == "__main__":
    port, username, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    logging.basicConfig(level=logging.WARNING)
    api.serve(RefBroker(), api.BrokerCredentials(username, password), host="127.0.0.1", port=port)
