"""The runtime: durable executions on top of the pure engine (docs/runtime.md).

- `accepting`: the three ways an input is accepted (on the remembered snapshot, stored and
  applied in one transaction, or queued) and the settling that follows;
- `advancing`: one advance = the engine on the pending inputs, then one save; the inline loop;
- `store`: the small interface the runtime talks to, with `sqlstore` (the database) and
  `memstore` (in memory, for fast tests);
- `effects`: the engine's effects as timer and work rows (a dispatch table);
- `performers`: the work that leaves the process, and its results coming back;
- `timers`: due timers into inbox items, and the sweeper;
- `queue`: enqueueing django-q2 tasks (imports no runtime module); `io`: IO operations.

Sync mode performs work inline, and that work starts or triggers other executions inline:
a recursion in the domain. The modules still import one way (queue, store, effects, io ->
advancing -> accepting -> performers): `executions.apps` plugs `performers.PERFORM` into
`advancing.perform_here`, as it plugs the SQL store into `store.active`.
"""
