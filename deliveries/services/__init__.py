"""The business logic of deliveries, one module per concern. Views, tasks, the admin and other apps
call these; each module's docstring says what it owns and what it may call.

- intake: accepting a delivery (validation, the abuse guard, the one INSERT with its counters)
- queueing: handing deliveries to the broker (task names, lanes)
- status: every status change (the transitions of models.TRANSITIONS, their record and counters)
- dispatch: the one orchestrator of sending, for a single delivery or a batch
- outcomes: what a provider call's answer does to its delivery
- reports: provider status reports, held ones included
- polling: the status poller and the report horizon
- recovery: the sweeper and dead workers' claims
- staff: retry and cancel

Imports run one way: intake, staff, recovery -> dispatch -> outcomes -> polling, reports -> status
-> counters; queueing is used by all and uses none of them.
"""
